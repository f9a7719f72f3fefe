"""pmg: progressive multi-granularity training (Du, Chang, Bhunia, Xie, Ma, Song and Guo 2020, "Fine-Grained
Visual Classification via Progressive Multi-Granularity Training of Jigsaw Patches", ECCV, arXiv 2003.03836).

What it changes:

- the head: a classifier on each of the backbone's last three stages (a 1x1 then a 3x3 convolution,
  each with BatchNorm and ReLU, global max pooling, then BatchNorm, linear, BatchNorm, ELU, linear), and
  a fourth on the three pooled vectors concatenated;
- the training step: four optimizer steps per batch. Step l = 1, 2, 3 trains the classifier of stage l
  on a jigsaw puzzle of the images, n x n tiles shuffled with n = 8, 4, 2 (the shallowest stage sees
  the finest puzzle); step 4 trains the concatenated classifier on the whole images. Each step's
  loss reaches only the layers its classifier reads, so step 1 leaves stages 2 and 3 and their
  classifiers as they were (``tests/methods/test_pmg.py``);
- what the loop records: the loss of step 4 (its own step), so a run's ``train_loss`` is twice the
  concatenated classifier's cross-entropy on the whole images, its ``train_acc`` that classifier's
  accuracy; steps 1-3's losses are not in it, but a nan or inf one becomes the batch's loss, so the
  loop's divergence check (which reads only the loss it gets back) ends the run with its sentence;
- inference: the sum of the four classifiers' logits (the authors' "combined" prediction, the one
  their code selects checkpoints by); the jigsaw is training only.

Stages: the last three spatial maps of the backbone at strides 8, 16 and 32 (8, 16, 16 at
``model.output_stride=16``): ``layer2``, ``layer3``,
``layer4`` of a ResNet (torchvision or timm), and for other timm CNNs the two ``feature_info`` stages
before the last (MobileNetV2: ``blocks.2``, ``blocks.4``) with the map the plain head reads as the third
(MobileNetV2's 1280-channel ``conv_head`` output; a ResNet's ``layer4``), read in one pass by timm's
``forward_intermediates``. A backbone with fewer stages is refused in one sentence.

Setting (config key ``method.*``, default the authors'): ``pmg_width`` = 512, the conv blocks' inner width
and the classifiers' hidden width; the conv blocks end with half the last stage's channels (1024 for
ResNet-50, whose last stage has 2048).

From the authors' code (PRIS-CV/PMG-Progressive-Multi-Granularity-Training, ``model.py``, ``train.py``,
``utils.py``; the paper leaves these out): the layer sizes above and BatchNorm momentum 0.01 in the conv
blocks; one permutation of the tiles for the whole batch, over the top-left ``n * (side // n)`` square
(the rest of the image stays), a single cycle through all tiles so that none stays in place (their swaps of
the top-left tile with every tile in shuffled order make exactly that); the concatenated classifier's loss doubled in step 4; every pass runs
the whole backbone (so every BatchNorm's statistics see every pass) while only the stage's own
classifier is scored. Differences, each stated: the classifiers not scored in a step are not run (the
authors run all four every pass, which moves their BatchNorm statistics too); a pass for step l
runs only conv block l, step 4 all three; the tile permutation comes from torch's generator
(seeded per epoch), not Python's; the optimizer and schedule are fgvc's (the authors: SGD, lr 0.002
for the new layers and 0.0002 for the backbone, cosine over 200 epochs); a dropout of
``model.dropout`` before each classifier's last linear layer (0 by default, as the authors).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fgvc.errors import UserError
from fgvc.methods.base import Method as BaseMethod

GRANULARITIES = (8, 4, 2)  # tiles per side of the puzzles of steps 1, 2, 3 (the paper's n)
CONCAT_WEIGHT = 2.0  # step 4's loss factor (the authors' code)


def tile_cycle(n: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random permutation of the n * n tiles that is one cycle through all of them, so every tile
    moves (n >= 2): the permutation the authors' ``jigsaw_generator`` makes by swapping the top-left tile with
    every tile in a shuffled order. Output tile ``c[i]`` takes input tile ``c[i + 1]`` along a random order c."""
    c = torch.randperm(n * n, generator=generator)
    order = torch.empty_like(c)
    order[c] = c.roll(-1)
    return order


def jigsaw(x: Tensor, n: int, order: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Images (B, C, H, W) cut into n x n tiles of side ``H // n`` x ``W // n``, the tiles placed in ``order``
    (a permutation of the n * n tiles in row-major order: output tile t is input tile ``order[t]``; by default
    ``tile_cycle``'s, drawn from ``generator`` / torch's global one when None), the same for every image of the
    batch; the pixels past the last whole tile stay where they are. n = 1 returns ``x`` unchanged."""
    if n == 1:
        return x
    b, c, h, w = x.shape
    th, tw = h // n, w // n
    if order is None:
        order = tile_cycle(n, generator)
    order = order.to(x.device)
    grid = x[..., :n * th, :n * tw]
    tiles = grid.reshape(b, c, n, th, n, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c, th, tw)
    shuffled = tiles[:, order].reshape(b, n, n, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, n * th, n * tw)
    out = x.clone()
    out[..., :n * th, :n * tw] = shuffled
    return out


class BasicConv(nn.Sequential):
    """Convolution without bias, BatchNorm (momentum 0.01, the authors'), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout, momentum=0.01), nn.ReLU())


def classifier(channels: int, width: int, num_classes: int, dropout: float) -> nn.Sequential:
    """BatchNorm, linear to ``width``, BatchNorm, ELU, (dropout), linear to the classes: index 5 is the last."""
    return nn.Sequential(nn.BatchNorm1d(channels), nn.Linear(channels, width), nn.BatchNorm1d(width), nn.ELU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(width, num_classes))


class PMGHead(nn.Module):
    """Three stage maps -> the logits of classifier 1, 2, 3 or the concatenated one (``part`` 0-3), or all four."""

    def __init__(self, stage_channels: list[int], num_classes: int, dropout: float, width: int):
        super().__init__()
        out = max(1, stage_channels[-1] // 2)
        self.blocks = nn.ModuleList(nn.Sequential(BasicConv(c, width, 1), BasicConv(width, out, 3))
                                    for c in stage_channels)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.classifiers = nn.ModuleList(classifier(out, width, num_classes, dropout) for _ in stage_channels)
        self.concat = classifier(out * len(stage_channels), width, num_classes, dropout)

    def pooled(self, maps: list[Tensor], stage: int) -> Tensor:
        return self.pool(self.blocks[stage](maps[stage]))

    def forward(self, maps: list[Tensor], part: int | None = None) -> Tensor | list[Tensor]:
        if part is not None and part < len(self.classifiers):  # one stage's classifier (steps 1-3)
            return self.classifiers[part](self.pooled(maps, part))
        pooled = [self.pooled(maps, s) for s in range(len(maps))]
        concat = self.concat(torch.cat(pooled, dim=1))
        if part is not None:  # the concatenated classifier (step 4)
            return concat
        return [*(c(p) for c, p in zip(self.classifiers, pooled, strict=True)), concat]


def stage_maps(net: nn.Module, family: str, x: Tensor) -> list[Tensor]:
    """Normalised images -> the backbone's last three spatial maps (strides 8, 16, 32; 8, 16, 16 at
    model.output_stride=16), shallowest first."""
    if family == "resnet" and not hasattr(net, "forward_features"):  # torchvision ResNet
        x = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))
        s1 = net.layer2(x)
        s2 = net.layer3(s1)
        return [s1, s2, net.layer4(s2)]
    n = len(net.feature_info)
    final, (s1, s2) = net.forward_intermediates(x, indices=[n - 3, n - 2])
    return [s1, s2, final]


def check_stages(net: nn.Module, family: str, name: str) -> None:
    """UserError (one sentence) unless the backbone has the three stages PMG reads."""
    torchvision_resnet = family == "resnet" and not hasattr(net, "forward_features")
    if not torchvision_resnet and (not hasattr(net, "forward_intermediates")
                                   or len(getattr(net, "feature_info", [])) < 3):
        raise UserError(f"method.name=pmg reads the last three stages of the backbone, and {name} does not list "
                        "its stages (timm feature_info and forward_intermediates); use a ResNet or MobileNetV2, "
                        "or another method")


class Method(BaseMethod):
    name_ = "pmg"
    takes_adversarial = False  # four forward passes and optimizer steps per batch
    adversarial_refusal = ("its training step runs four forward passes and optimizer steps per batch, which the "
                           "adversarial loss cannot wrap")
    takes_ddp = False  # a step-l pass leaves the other classifiers unused, which DDP's reducer refuses
    head_linear = "concat.5"  # the concatenated classifier's last linear layer
    # loss.center would reach step 4 only (the concatenated classifier's input) at twice its weight, pairwise
    # confusion each of the four steps
    takes_feature_losses = False
    scores = "four passes per batch (three jigsaw puzzles, then the whole image at twice the weight)"

    def make_head(self, channels: int, num_classes: int, dropout: float, *, pmg_width: int = 512) -> nn.Module:
        check_stages(self.net, self.family, self.name)
        was = [(m, m.training) for m in self.net.modules()]
        self.net.eval()
        try:
            with torch.no_grad():
                probe = next(self.net.parameters())
                maps = stage_maps(self.net, self.family, torch.zeros(1, 3, 64, 64, device=probe.device))
        finally:
            for m, training in was:
                m.training = training
        return PMGHead([m.shape[1] for m in maps], num_classes, dropout, pmg_width)

    def logits(self, x: Tensor, part: int | None = None) -> Tensor | list[Tensor]:
        """Normalised images -> the logits of ``part`` (0-2 a stage's classifier, 3 the concatenated one), or
        all four (None)."""
        return self.head_module(stage_maps(self.net, self.family, x), part)

    def infer(self, x: Tensor) -> Tensor:
        return torch.stack(self.logits(x)).sum(0)  # the authors' combined prediction

    def forward(self, x: Tensor, part: int | None = None) -> Tensor:
        """Images in [0, 1] -> the combined logits, or with ``part`` one classifier's (the training steps,
        through the Fabric wrapper so that they run under its precision)."""
        return self.infer(self.normalize(x)) if part is None else self.logits(self.normalize(x), part)

    def train_steps(self, x: Tensor, target: Tensor, criterion, forward, step) -> tuple[Tensor, Tensor]:
        """Steps 1-3 here, step 4's (loss, logits) for the loop; the loss is step 4's, 2 x the cross-entropy of the
        concatenated classifier on the whole images, unless a jigsaw step's loss was nan or inf: then that loss,
        so that the loop's finiteness check (its one host sync of the step) ends the run with its sentence."""
        earlier = None  # the first non-finite loss of steps 1-3, else the latest one (finite)
        for part, n in enumerate(GRANULARITIES):  # steps 1-3: a puzzle of n x n tiles for stage part + 1
            loss = criterion(forward(jigsaw(x, n), part=part), target)
            earlier = loss.detach() if earlier is None else torch.where(torch.isfinite(earlier), loss.detach(), earlier)
            step(loss)
        logits = forward(x, part=len(GRANULARITIES))  # step 4, the loop's own: the whole image, concatenated
        loss = CONCAT_WEIGHT * criterion(logits, target)
        return torch.where(torch.isfinite(earlier), loss, earlier), logits

    def train_loss(self, x: Tensor, target: Tensor, criterion, forward) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("PMG takes one optimizer step per granularity: the loop calls train_steps "
                                  "with its step function (fgvc.methods.train_loss(..., step=...))")
