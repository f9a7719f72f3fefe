"""Backbones by name: the paper's torchvision models and any timm model, on [0, 1] images.

Every model is a ``Classifier``: mean/std normalisation first, then the backbone with a
new head (dropout, then linear) sized to the dataset. Attack budgets are therefore in
pixel units and a checkpoint carries its own preprocessing.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.vision_transformer import interpolate_embeddings

from fgvc.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (constructor, ImageNet weights enum member)
TORCHVISION_MODELS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1),
    "resnet152": (tvm.resnet152, tvm.ResNet152_Weights.IMAGENET1K_V1),
    "resnext101_32x8d": (tvm.resnext101_32x8d, tvm.ResNeXt101_32X8D_Weights.IMAGENET1K_V1),
    "vit_b_16": (tvm.vit_b_16, tvm.ViT_B_16_Weights.IMAGENET1K_V1),
    "vit_l_16": (tvm.vit_l_16, tvm.ViT_L_16_Weights.IMAGENET1K_V1),
}


class Normalize(nn.Module):
    """(x - mean) / std per channel; buffers, so they travel with the checkpoint."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Images in [0, 1] -> logits. ``family`` is 'resnet', 'vit' or 'timm'."""

    def __init__(self, net: nn.Module, name: str, family: str, head_path: str, feature_path: str | None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.name, self.family = name, family
        self.head_path = head_path  # dotted path (inside net) of the final nn.Linear
        self.feature_path = feature_path  # last spatial feature map before pooling (CNNs), else None

    def forward(self, x):
        return self.net(self.normalize(x))

    @property
    def head(self) -> nn.Linear:
        return self.net.get_submodule(self.head_path)

    @property
    def feature_module(self) -> nn.Module | None:
        return self.net.get_submodule(self.feature_path) if self.feature_path else None


# Ports of TensorFlow models: a timm architecture built with TensorFlow's 'SAME' padding
# (asymmetric for stride 2), which weights trained in TensorFlow need to compute what they did
# there (fgvc.models.tflite imports them). name -> (timm name, timm keyword arguments)
TF_PORTS = {
    "tf_mobilenetv2_100": ("mobilenetv2_100", {"pad_type": "same"}),
    "tf_mobilenetv2_140": ("mobilenetv2_140", {"pad_type": "same"}),
}


def model_names() -> list[str]:
    return [*TORCHVISION_MODELS, *TF_PORTS]


def create_model(name: str, num_classes: int, pretrained: bool = False, dropout: float = 0.0,
                 image_size: int = 224) -> Classifier:
    """A classifier with a fresh ``num_classes`` head, dropout ``dropout`` before it."""
    if num_classes < 1:
        raise UserError(f"a model needs at least one class, got {num_classes}")
    if name in TORCHVISION_MODELS:
        return _torchvision_model(name, num_classes, pretrained, dropout, image_size)
    if name in TF_PORTS:
        if pretrained:
            raise UserError(f"{name} has no downloadable weights; give a TensorFlow Lite file with "
                            "model.weights=PATH.tflite and model.pretrained=false")
        timm_name, extra = TF_PORTS[name]
        net = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, drop_rate=dropout, **extra)
        return Classifier(net, name, "timm", _find_linear_head(net), net.feature_info[-1]["module"])
    if name in timm.list_models() or (pretrained and name in timm.list_models(pretrained=True)):
        return _timm_model(name, num_classes, pretrained, dropout, image_size)
    if "." in name and name.split(".")[0] in timm.list_models():  # timm name with a pretrained tag
        return _timm_model(name, num_classes, pretrained, dropout, image_size)
    close = difflib.get_close_matches(name, list(TORCHVISION_MODELS) + timm.list_models(), n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UserError(f"unknown model {name!r}{hint}; use {', '.join(TORCHVISION_MODELS)} or any timm model name")


def _torchvision_state_dict(weights) -> dict:
    """ImageNet weights from torchvision's cache (downloaded there when online)."""
    filename = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say which and how to fix
            raise UserError(f"pretrained weights {cached} cannot be read ({e.__class__.__name__}); "
                            f"delete it and download {weights.url} again") from None
    try:
        return weights.get_state_dict(progress=True)
    except OSError as e:
        raise UserError(f"pretrained weights {filename} are not cached and cannot be downloaded "
                        f"({e.__class__.__name__}); download {weights.url} and put it in "
                        f"{cached.parent}") from None


def _torchvision_model(name, num_classes, pretrained, dropout, image_size) -> Classifier:
    build, weights = TORCHVISION_MODELS[name]
    if name.startswith("vit"):
        if image_size % 16:
            raise UserError(f"{name} needs data.image_size divisible by 16, got {image_size}")
        net = build(weights=None, image_size=image_size)
        if pretrained:
            state = _torchvision_state_dict(weights)
            if image_size != 224:
                # resize the position-embedding table to the new patch grid (bicubic, as torchvision does)
                state = interpolate_embeddings(image_size, 16, state)
            net.load_state_dict(state)
        net.heads = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.hidden_dim, num_classes))
        return Classifier(net, name, "vit", "heads.1", None)
    net = build(weights=None)
    if pretrained:
        net.load_state_dict(_torchvision_state_dict(weights))
    net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc.in_features, num_classes))
    return Classifier(net, name, "resnet", "fc.1", "layer4")


def _timm_model(name, num_classes, pretrained, dropout, image_size) -> Classifier:
    kwargs = {"num_classes": num_classes, "drop_rate": dropout}
    probe = timm.create_model(name.split(".")[0], pretrained=False, num_classes=0)
    is_vit = isinstance(probe, timm.models.vision_transformer.VisionTransformer)
    if is_vit:
        kwargs["img_size"] = image_size  # timm resamples the position embeddings when loading weights
    try:
        net = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise UserError(f"pretrained weights for timm model {name!r} are not cached and cannot be "
                        f"downloaded ({e.__class__.__name__}); put them in the Hugging Face cache "
                        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) or use model.pretrained=false") from None
    cfg = net.pretrained_cfg or {}
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    head_path = _find_linear_head(net)
    if is_vit:
        return Classifier(net, name, "vit", head_path, None, mean, std)
    family = "resnet" if isinstance(net, timm.models.resnet.ResNet) else "timm"
    feature_path = net.feature_info[-1]["module"] if getattr(net, "feature_info", None) else None
    return Classifier(net, name, family, head_path, feature_path, mean, std)


def _find_linear_head(net: nn.Module) -> str:
    classifier = net.get_classifier()
    for path, module in net.named_modules():
        if module is classifier and isinstance(module, nn.Linear):
            return path
    for path, module in net.named_modules():  # classifier wrapped in a container: its last Linear
        if isinstance(module, nn.Linear) and path.startswith(tuple(p for p, m in net.named_modules() if m is classifier)):
            return path
    raise UserError(f"timm model {type(net).__name__} does not end in a linear classifier; fgvc needs one")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}
