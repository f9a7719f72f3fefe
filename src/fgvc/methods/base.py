"""The base of every FGVC method: a ``Classifier`` whose head reads the backbone's spatial feature map.

A method changes up to three things (head, training step, inference), through the override points of
``Method``:

- ``make_head(channels, num_classes, dropout, **settings)``: the head on the backbone's last spatial
  feature map (B, C, h, w); it is installed in the backbone's classifier slot (``fc`` of a ResNet,
  ``classifier`` of MobileNetV2), so the trainable-depth names (``model.trainable=fc``, ``head``,
  ``layer4+fc``, ``head+blocks:N``) train it as they train the plain head.
- ``train_loss(x, target, criterion, forward)``: one training step's loss and the logits train
  accuracy is read from (several forward passes, extra losses); the default is one forward pass
  through ``forward`` (the module the optimizer's backward runs through, e.g. a DDP wrapper).
- ``train_steps(x, target, criterion, forward, step)``: for a method that takes optimizer steps of its
  own within a batch (PMG's one step per granularity): ``step(loss)`` runs one (zero the gradients,
  backward, optimizer step), and the loss it returns is the batch's last, which the loop steps on as
  it steps on ``train_loss``'s; the default takes no step of its own and is ``train_loss``.
- ``infer(x)``: the inference procedure inside ``forward`` (normalised images -> logits); the default
  is the head on the feature map. Whatever it does (WS-DAN's attention crop), eval, TTA, calibration,
  predict, serve, Grad-CAM, attacks and export see it, because they only call ``forward``.

A method's model is still a ``fgvc.models.factory.Classifier``: images in [0, 1], normalisation
inside, logits out; ``.head`` is the final ``nn.Linear`` (inside the method's head), ``.feature_module``
the backbone's last spatial map (for Grad-CAM), ``.method`` the method's name and ``.settings`` its
settings (keyword arguments of ``make_head``, whose defaults are the paper's).

Capabilities a method may lack are class flags the training preflight reads: ``takes_mixing``
(Mixup/CutMix soft targets), ``takes_adversarial`` (a single training forward the adversarial loss
can wrap; ``adversarial_refusal`` says why not, for the refusal), ``takes_ddp`` (every forward pass through the DDP wrapper), ``takes_compile`` (every training
pass through ``forward``, the module ``train.compile`` compiles), ``takes_feature_losses`` (``loss.center``
and ``loss.pairwise_confusion``, which the criterion adds to each call and read the input of the final
linear layer's latest call: exact only for a step of one forward pass and one criterion call per image;
``scores`` says what a method's step scores instead, for the refusal); a method that pairs images of a batch
by class sets ``needs_pk_batches`` (batches of P classes x K images, ``data.sampler=pk``); one whose inference is
global average pooling + the final linear layer (API-Net's plain path) sets ``gap_linear_inference``, so CAM applies.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fgvc.errors import UserError
from fgvc.models.factory import Classifier

Criterion = Any  # (logits (B, C), soft targets (B, C)) -> scalar loss


class Method(Classifier):
    """A backbone ``Classifier`` whose plain head is replaced by the method's head (``make_head``)."""

    name_: ClassVar[str] = ""  # the registry name (method.name)
    takes_mixing: ClassVar[bool] = True
    takes_adversarial: ClassVar[bool] = True
    # why not, when takes_adversarial is False (the refusal's words)
    adversarial_refusal: ClassVar[str] = "its training step runs several forward passes the adversarial loss cannot wrap"
    takes_ddp: ClassVar[bool] = True
    takes_compile: ClassVar[bool] = True  # train.compile: its training passes go through forward
    takes_feature_losses: ClassVar[bool] = True  # loss.center, loss.pairwise_confusion: one scored pass per image
    scores: ClassVar[str] = "one forward pass per image"  # what its training step scores (the refusal's words)
    own_center_loss: ClassVar[str] = ""  # the method's own centre-loss setting, the alternative to loss.center
    needs_pk_batches: ClassVar[bool] = False  # data.sampler=pk with K >= 2 (API-Net's in-batch pairs)
    # Grad-CAM reads the backbone's first pass of a forward (the whole image; WS-DAN's later passes see crops)
    first_pass_is_the_image: ClassVar[bool] = True
    # inference is global average pooling of the map, then the final linear layer (``head``): CAM applies
    gap_linear_inference: ClassVar[bool] = False
    head_linear: ClassVar[str] = "fc"  # dotted path of the final nn.Linear inside the head module

    def __init__(self, backbone: Classifier, num_classes: int, dropout: float = 0.0, **settings):
        channels = feature_channels(backbone)  # refuses a backbone without a spatial map, first
        slot = classifier_slot(backbone)
        super().__init__(backbone.net, backbone.name, backbone.family, f"{slot}.{self.head_linear}",
                         backbone.feature_path, output_stride=backbone.output_stride)
        self.normalize = backbone.normalize  # the backbone's own mean/std
        for key in ("folded_batchnorm",):  # facts about the backbone's weights travel with it
            if hasattr(backbone, key):
                setattr(self, key, getattr(backbone, key))
        self.method = self.name_
        self.settings = {**settings_of(type(self)), **settings}  # every setting, defaults filled in
        self.net.set_submodule(slot, self.make_head(channels, num_classes, dropout, **settings))
        self.head_slot = slot

    @classmethod
    def build(cls, backbone: Classifier, num_classes: int, dropout: float = 0.0, **settings) -> Classifier:
        """The method's model on ``backbone`` (its weights kept, its plain head replaced)."""
        return cls(backbone, num_classes, dropout, **settings)

    # --- override points -------------------------------------------------------------------------

    def make_head(self, channels: int, num_classes: int, dropout: float, **settings) -> nn.Module:
        """The head on the (B, ``channels``, h, w) feature map -> (B, ``num_classes``) logits."""
        raise NotImplementedError

    def infer(self, x: Tensor) -> Tensor:
        """Normalised images -> logits: the method's inference procedure."""
        return self.head_module(self.features(x))

    def train_loss(self, x: Tensor, target: Tensor, criterion: Criterion, forward) -> tuple[Tensor, Tensor]:
        """(loss, logits) of one training step on images ``x`` in [0, 1] and soft targets (B, C);
        ``forward`` is the model as the optimizer sees it (a DDP or Fabric wrapper of ``self``)."""
        logits = forward(x)
        return criterion(logits, target), logits

    def train_steps(self, x: Tensor, target: Tensor, criterion: Criterion, forward, step) -> tuple[Tensor, Tensor]:
        """``train_loss`` for a method that also takes optimizer steps of its own in the batch: ``step(loss)``
        is one (zero the gradients, backward, optimizer step). The default takes none."""
        return self.train_loss(x, target, criterion, forward)

    # --- shared machinery --------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        return self.infer(self.normalize(x))

    @property
    def head_module(self) -> nn.Module:
        """The method's whole head (the module in the backbone's classifier slot)."""
        return self.net.get_submodule(self.head_slot)

    def features(self, x: Tensor) -> Tensor:
        """Normalised images -> the backbone's last spatial feature map (B, C, h, w)."""
        return backbone_features(self.net, self.family, x)


def backbone_features(net: nn.Module, family: str, x: Tensor) -> Tensor:
    """The last spatial feature map of a torchvision ResNet (layer4) or a timm CNN (``forward_features``)."""
    if family == "resnet" and not hasattr(net, "forward_features"):  # torchvision: its forward, without pool and fc
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return net.forward_features(x)


def classifier_slot(backbone: Classifier) -> str:
    """The dotted path, inside ``backbone.net``, of the module that maps pooled features to logits:
    ``fc`` (ResNets), ``classifier`` (MobileNetV2), ``head.fc`` (ConvNeXt); a method's head goes there."""
    net = backbone.net
    if backbone.family == "resnet" and not hasattr(net, "get_classifier"):
        return "fc"
    classifier = net.get_classifier()
    for path, module in net.named_modules():
        if module is classifier:
            return path
    raise UserError(f"{backbone.name} has no classifier module a method's head can replace; use method.name=plain")


def feature_channels(backbone: Classifier) -> int:
    """Channels of the backbone's last spatial map, from one blank image (eval mode, modes restored);
    UserError (one sentence) when the backbone has no (B, C, h, w) map: ViTs, CLIP towers, NHWC stages."""
    net = backbone.net
    refuse = UserError(f"{backbone.name} has no spatial feature map a method's head can read (methods other than "
                       "plain need a CNN such as resnet50 or tf_mobilenetv2_100); use method.name=plain")
    if backbone.family == "vit" or backbone.feature_path is None:
        raise refuse
    if backbone.family != "resnet" and not hasattr(net, "forward_features"):
        raise refuse
    modes = [(m, m.training) for m in net.modules()]
    device = next(net.parameters()).device
    net.eval()
    try:
        with torch.no_grad():
            fmap = backbone_features(net, backbone.family, backbone.normalize(torch.zeros(1, 3, 64, 64,
                                                                                           device=device)))
    except torch.OutOfMemoryError:
        raise
    except (AssertionError, RuntimeError, ValueError):
        # what a backbone without a usable map raises on a small image: timm's input-size asserts (Swin, MLP-Mixer,
        # MaxViT), shape mismatches of position tables (CoAtNet, PiT), a layer refusing the size (ValueError);
        # any other error is a bug and stays one
        raise refuse from None
    finally:
        for m, training in modes:
            m.training = training
    expected = getattr(net, "num_features", None)
    if fmap.dim() != 4 or (expected is not None and fmap.shape[1] != expected):
        raise refuse
    return int(fmap.shape[1])


def settings_of(cls: type[Method]) -> dict[str, Any]:
    """A method's settings and their defaults: the keyword arguments of its ``make_head``."""
    params = inspect.signature(cls.make_head).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


__all__ = ["Method", "backbone_features", "classifier_slot", "feature_channels", "settings_of"]
