"""cal: counterfactual attention learning on WS-DAN (Rao, Chen, Lu and Zhou, ICCV 2021, arXiv 2108.08728).

What it changes, on top of ``wsdan``: the training step. Besides the attention maps A, each pass
pools the same features with random counterfactual maps A' (uniform in [0, 2] per location, drawn
afresh each pass); the effect of the learned attention on the prediction is
Y_effect = C(pool(F, A)) - C(pool(F, A')), and the loss asks it to predict the class too, so the
attention is trained by how much better it is than random attention, not only by the final score:

    loss = CE(Y_raw) / 3 + CE(Y_effect over raw, crop and drop views) + 2/3 CE(Y_aug over crop and drop)
           + the centre loss (as WS-DAN)

The crop and drop views go through the network as one batch. Inference is WS-DAN's (the average of the
raw logits and those of the attention crop); the effect branch is a training signal only.

Setting, besides WS-DAN's: ``effect_weight`` (config key ``method.effect_weight``), the weight of the
effect cross-entropy, 1 in the authors' code.

From the authors' code (raoyongming/CAL, ``fgvc/models/cal.py``, ``fgvc/train_distributed.py``): the
counterfactual maps are uniform in [0, 2] in training (all ones at evaluation, where the effect is not
used); the effect is computed on the raw, crop and drop views with the raw view's labels, its
cross-entropy averaged over all three; the augmented views' cross-entropy is weighted 2/3 and the raw
one 1/3; the signed square root adds 1e-6; the rest (attention block, the 100 x feature scale, crop and
drop thresholds, centre loss) is WS-DAN's code. The multi-crop and flip test-time ensemble of the
authors' ``infer.py`` (behind the paper's 90.6 %) is not part of inference here: ``fgvc eval --tta flip``
reports flip averaging apart. Their ResNet-101 (``fgvc/models/resnet.py``) keeps layer4 at stride 1, so
their attention reads a stride-16 map (28 x 28 at 448 px); here, as for WS-DAN, the backbone's standard
stride-32 map unless ``model.output_stride=16`` sets the authors' stride (by dilation, docs/models.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fgvc.methods import wsdan


def effect_logits(head: wsdan.AttentionHead, fmap: Tensor, logits: Tensor, counterfactual: Tensor) -> Tensor:
    """Y_effect = C(pool(F, A)) - C(pool(F, A')): what the learned attention adds over ``counterfactual`` maps A';
    ``logits`` is C(pool(F, A)), the pass's own logits (computed once, so dropout draws one mask for them)."""
    return logits - head.classify(head.pool(fmap, counterfactual))


def random_attention(maps: Tensor) -> Tensor:
    """Counterfactual maps shaped like ``maps``: uniform in [0, 2] (torch's global generator)."""
    return torch.rand_like(maps) * 2


class CounterfactualHead(wsdan.AttentionHead):
    eps = 1e-6  # under the signed square root (the authors' CAL code)


class Method(wsdan.Method):
    name_ = "cal"
    # the last final-layer call holds 2B counterfactual rows: loss.center would never apply, and pairwise
    # confusion would pair effect logits across views
    scores = "three views of each image and the counterfactual effects of their attention"

    def make_head(self, channels: int, num_classes: int, dropout: float, *, attention_maps: int = 32,
                  crop_threshold: tuple[float, float] = (0.4, 0.6), drop_threshold: tuple[float, float] = (0.2, 0.5),
                  crop_padding: float = 0.1, test_crop_threshold: float = 0.1, test_crop_padding: float = 0.05,
                  center_weight: float = 1.0, center_momentum: float = 0.05, effect_weight: float = 1.0) -> nn.Module:
        return CounterfactualHead(channels, num_classes, dropout, attention_maps)

    def passes(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Normalised images -> (logits, effect logits, part features, attention maps) of one training pass."""
        head = self.head_module
        fmap = self.features(x)
        maps = head.attention(fmap)
        parts = head.pool(fmap, maps)
        logits = head.classify(parts)
        return logits, effect_logits(head, fmap, logits, random_attention(maps)), parts, maps

    def train_loss(self, x: Tensor, target: Tensor, criterion, forward) -> tuple[Tensor, Tensor]:
        x = self.normalize(x)
        logits, effect, parts, maps = self.passes(x)
        crops, dropped = self.augment(x, maps)
        aug_logits, aug_effect, _, _ = self.passes(torch.cat([crops, dropped]))
        twice = torch.cat([target, target])
        loss = (criterion(logits, target) / 3
                + self.settings["effect_weight"] * criterion(torch.cat([effect, aug_effect]),
                                                             torch.cat([target, twice]))
                + criterion(aug_logits, twice) * 2 / 3)
        return loss + self.centre_term(parts, target.argmax(1)), logits
