"""Backbones by name: the paper's torchvision models and any timm model, on [0, 1] images.

Every model is a ``Classifier``: mean/std normalisation first, then the backbone with a
new head (dropout, then linear) sized to the dataset. Attack budgets are therefore in
pixel units and a checkpoint carries its own preprocessing.
"""

from __future__ import annotations

import difflib
import inspect
import os
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.vision_transformer import interpolate_embeddings

from fgvc.errors import UserError
from fgvc.models import hub

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
    """Images in [0, 1] -> logits. ``family`` is 'resnet', 'vit' or 'timm'; ``output_stride`` the stride of
    the last feature map (below the backbone's own 32, its last stages dilate instead of striding)."""

    def __init__(self, net: nn.Module, name: str, family: str, head_path: str, feature_path: str | None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, output_stride: int = 32):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.name, self.family = name, family
        self.output_stride = output_stride
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


CLIP_PREFIX = "clip:"  # model.name=clip:<open_clip name>: CLIP's image tower with a linear head (fgvc.clip.classifier)


def is_clip(name: str) -> bool:
    return name.startswith(CLIP_PREFIX)


def model_names() -> list[str]:
    return [*TORCHVISION_MODELS, *TF_PORTS]


def create_model(name: str, num_classes: int, pretrained: bool = False, dropout: float = 0.0,
                 image_size: int = 224, output_stride: int = 32) -> Classifier:
    """A classifier with a fresh ``num_classes`` head, dropout ``dropout`` before it. ``output_stride``
    16 or 8 dilates the last stages instead of striding them (torchvision's ``replace_stride_with_dilation``,
    timm's ``output_stride``): the same weights, a 2x or 4x finer last feature map."""
    if num_classes < 1:
        raise UserError(f"a model needs at least one class, got {num_classes}")
    if is_clip(name):  # CLIP towers come from open_clip, one floor up: fgvc.api.build_model builds them
        raise UserError(f"{name} is a CLIP model, built from a config (fgvc.api.build_model, fgvc.clip.classifier), "
                        "not by create_model")
    if output_stride not in (8, 16, 32):
        raise UserError(f"model.output_stride must be 8, 16 or 32, got {output_stride}")
    if name in TORCHVISION_MODELS:
        return _torchvision_model(name, num_classes, pretrained, dropout, image_size, output_stride)
    strided = {"output_stride": output_stride} if output_stride != 32 else {}
    if name in TF_PORTS:
        if pretrained:
            raise UserError(f"{name} has no downloadable weights; give a TensorFlow Lite file with "
                            "model.weights=PATH.tflite and model.pretrained=false")
        timm_name, extra = TF_PORTS[name]
        net = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, drop_rate=dropout, **extra,
                                **strided)
        return Classifier(net, name, "timm", _find_linear_head(net), _last_feature_map(net),
                          output_stride=output_stride)
    if name in timm.list_models() or (pretrained and name in timm.list_models(pretrained=True)) \
            or ("." in name and name.split(".")[0] in timm.list_models()):  # a timm name, perhaps with a tag
        return _timm_model(name, num_classes, pretrained, dropout, image_size, **strided)
    # torchvision's names are timm's too (resnet18): each name once, or a hint repeats it
    close = difflib.get_close_matches(name, list(dict.fromkeys([*TORCHVISION_MODELS, *timm.list_models()])), n=3)
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
    if not hub.reachable(weights.url):  # urllib has no timeout of its own: a dead network could hang here
        raise UserError(f"pretrained weights {filename} are not cached and {weights.url.split('/')[2]} cannot be "
                        f"reached; download {weights.url} and put it in {cached.parent}")
    try:
        return weights.get_state_dict(progress=True)
    except OSError as e:
        raise UserError(f"pretrained weights {filename} are not cached and cannot be downloaded "
                        f"({e.__class__.__name__}); download {weights.url} and put it in "
                        f"{cached.parent}") from None


def _torchvision_model(name, num_classes, pretrained, dropout, image_size, output_stride=32) -> Classifier:
    build, weights = TORCHVISION_MODELS[name]
    if name.startswith("vit") and output_stride != 32:
        raise UserError(f"{name} is a vision transformer: its patches have one stride, so model.output_stride="
                        f"{output_stride} does not apply; leave model.output_stride at 32")
    if name in ("resnet18", "resnet34") and output_stride != 32:
        raise UserError(f"torchvision's {name} (basic blocks) cannot dilate its last stages to model.output_stride="
                        f"{output_stride}; use timm's copy of the same weights, model.name={name}.tv_in1k, which can")
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
    # layer4 (and layer3 for 8) keep the map's size and dilate their convolutions by 2 (and 4)
    net = build(weights=None, replace_stride_with_dilation=[False, output_stride == 8, output_stride < 32])
    if pretrained:
        net.load_state_dict(_torchvision_state_dict(weights))
    net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc.in_features, num_classes))
    return Classifier(net, name, "resnet", "fc.1", "layer4", output_stride=output_stride)


def _timm_model(name, num_classes, pretrained, dropout, image_size, **overrides) -> Classifier:
    """A timm model built for ``image_size``; ``overrides`` are extra constructor arguments (tiny test configs)."""
    arch = name.split(".")[0]
    # drop_rate only when asked for: a few families (vision-language encoders) take no such argument
    kwargs = {"num_classes": num_classes, **({"drop_rate": dropout} if dropout else {}), **overrides}
    probe = _timm_probe(name, arch, kwargs)
    if takes_img_size(type(probe)):
        # fixed-size families (ViT, DeiT, BEiT, EVA, swin, swinv2, MaxViT, CoaT, ...) size their
        # position tables and windows by it; timm resamples pretrained tables to it when loading
        kwargs["img_size"] = image_size
        probe = _timm_probe(name, arch, kwargs)
    is_vit = isinstance(probe, timm.models.vision_transformer.VisionTransformer)
    head_path = _find_linear_head(probe)  # refused here, before any weights are fetched or allocated
    output_stride = _check_output_stride(name, probe, kwargs.get("output_stride", 32))
    meta_error = _forward_error(probe, image_size)
    if pretrained:
        weights = hub.timm_weights_file(name)
        if weights:  # a local file: timm reads it without touching the network
            kwargs["pretrained_cfg_overlay"] = {"file": weights}
    try:
        net = timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as e:  # only a URL download is left to timm (torch's hub cache)
        if not pretrained:
            raise
        raise UserError(f"pretrained weights for timm model {name!r} could not be downloaded ({e.__class__.__name__}); "
                        f"put them in {Path(torch.hub.get_dir()) / 'checkpoints'} or use model.pretrained=false") from None
    except RuntimeError as e:  # a state dict that does not fit, e.g. tables timm cannot resample to this size
        if not pretrained:
            raise
        detail = " ".join(str(e).split())[:160]
        raise UserError(f"pretrained weights for timm model {name!r} do not fit the model built for "
                        f"{image_size}x{image_size} images ({detail}); set data.image_size={_made_for(name)} "
                        "or use model.pretrained=false") from None
    if meta_error is not None:
        # the shape-only run may fail for reasons of its own (an operator without a meta kernel):
        # the model's verdict is a real forward pass of one blank image
        real_error = _forward_error(net, image_size)
        if real_error is not None:
            raise _size_error(name, image_size, real_error)
    head_path = _find_linear_head(net)  # the real model's head (a 1x1 convolution becomes its Linear)
    cfg = net.pretrained_cfg or {}
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    if is_vit:
        return Classifier(net, name, "vit", head_path, None, mean, std)
    family = "resnet" if isinstance(net, timm.models.resnet.ResNet) else "timm"
    return Classifier(net, name, family, head_path, _last_feature_map(net), mean, std, output_stride)


def _timm_probe(name, arch, kwargs):
    """The architecture on the meta device: shapes only, no memory, no weights."""
    try:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, **kwargs)
    except (AssertionError, ValueError, ZeroDivisionError, IndexError, TypeError) as e:
        if "output_stride" in kwargs:  # the family may take every other argument: ask again without it
            _timm_probe(name, arch, {k: v for k, v in kwargs.items() if k != "output_stride"})
            raise _stride_error(name, kwargs["output_stride"]) from None
        if isinstance(e, TypeError):  # an argument this family does not take
            if "drop_rate" in str(e):
                raise UserError(f"timm model {name!r} takes no dropout argument; set model.dropout=0") from None
            raise
        raise _size_error(name, kwargs.get("img_size"), e) from None  # a size the constructor rejects


def _check_output_stride(name: str, probe: nn.Module, output_stride: int) -> int:
    """``output_stride`` when the built model's last feature map has it (timm's feature_info says), else a
    UserError: a family may take the argument through ``**kwargs`` and leave its strides as they were."""
    info = getattr(probe, "feature_info", None)
    reduction = info[-1]["reduction"] if info else None
    if output_stride != 32 and reduction != output_stride:
        raise _stride_error(name, output_stride)
    return output_stride


def _stride_error(name: str, output_stride: int) -> UserError:
    return UserError(f"timm model {name!r} cannot dilate its last stages to model.output_stride={output_stride}; "
                     "leave model.output_stride at 32, or pick a family that can (ResNets, MobileNets, "
                     "EfficientNets, ConvNeXt, RegNets)")


def takes_img_size(cls) -> bool:
    """Whether a timm model class's constructor (or a base class it passes **kwargs on to) takes img_size."""
    for c in cls.__mro__:
        if "__init__" not in vars(c):
            continue
        params = inspect.signature(c.__init__).parameters
        if "img_size" in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return False


def _forward_error(net: nn.Module, image_size: int) -> Exception | None:
    """The error one blank image of the configured size raises in ``net`` (eval mode, flags restored), or None."""
    device = next(iter(net.parameters()), torch.empty(0)).device
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, image_size, image_size, device=device))
    except Exception as e:  # noqa: BLE001 -- returned to the caller, who decides
        return e
    finally:
        for m, training in modes:
            m.training = training
    return None


def _made_for(name: str) -> int:
    """The image size a timm model's default configuration names (224 when it names none)."""
    cfg = timm.models.get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg and cfg.input_size else 224


def _size_error(name: str, image_size, e: Exception) -> UserError:
    made_for = _made_for(name)
    detail = " ".join(str(e).split())[:160] or e.__class__.__name__
    return UserError(f"timm model {name!r} cannot take {image_size}x{image_size} images ({detail}); set "
                     f"data.image_size={made_for} (the size it was made for) or another size its architecture allows")


def _last_feature_map(net: nn.Module) -> str | None:
    """The module whose output is pooled into the head's input (CAM needs exactly that map).
    timm's feature_info names the last stage; EfficientNet-family models (MobileNetV2 too) add a
    1x1 head convolution and BatchNorm after it, so their map is ``bn2``'s (1280 channels), and
    ResNetV2 (BiT) normalises the last stage's output in ``norm``."""
    if isinstance(net, timm.models.efficientnet.EfficientNet):
        return "bn2"
    if isinstance(net, timm.models.resnetv2.ResNetV2):  # pre-activation: a last BatchNorm + ReLU after the stages
        return "norm"
    return net.feature_info[-1]["module"] if getattr(net, "feature_info", None) else None


class ConvHeadAsLinear(nn.Linear):
    """A 1x1 convolution classifier (timm's ResNetV2 / BiT heads, ``use_conv=True``) as the nn.Linear it is
    on globally pooled features: fgvc's head (CAM, freezing, a zero-initialised new head) is a Linear.
    Inputs and outputs keep the convolution's shapes ((B, C, h, w) -> (B, K, h, w)), and in state dicts the
    weight keeps its (K, C, 1, 1) shape, so timm's checkpoints load and exported folders load back in timm."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, bias=conv.bias is not None,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        if conv.weight.device.type != "meta":
            with torch.no_grad():
                self.weight.copy_(conv.weight.flatten(1))
                if conv.bias is not None:
                    self.bias.copy_(conv.bias)
        self.register_state_dict_post_hook(_conv_shaped_weight)
        self.register_load_state_dict_pre_hook(_linear_shaped_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (1, 1):  # globally pooled: a matrix product
            return super().forward(x.flatten(1))[:, :, None, None]
        return nn.functional.conv2d(x, self.weight[:, :, None, None], self.bias)


def _conv_shaped_weight(module, state_dict, prefix, local_metadata) -> None:
    w = state_dict.get(prefix + "weight")
    if w is not None and w.ndim == 2:
        state_dict[prefix + "weight"] = w.reshape(*w.shape, 1, 1)


def _linear_shaped_weight(module, state_dict, prefix, *args) -> None:
    w = state_dict.get(prefix + "weight")
    if w is not None and w.ndim == 4 and w.shape[-2:] == (1, 1):
        state_dict[prefix + "weight"] = w.flatten(1)


def _find_linear_head(net: nn.Module) -> str:
    """The dotted path of ``net``'s one linear classifier (a 1x1 convolution on pooled features becomes one);
    UserError naming why for the families fgvc refuses (docs/models.md)."""
    name = type(net).__name__
    if not hasattr(net, "get_classifier"):
        raise UserError(f"timm model {name} is an encoder without a classification head (a vision-language "
                        "model's image tower); pick a classifier (docs/models.md lists the families fgvc refuses)")
    classifier = net.get_classifier()
    if isinstance(classifier, (tuple, list)):
        raise UserError(f"timm model {name} has {len(classifier)} classifier heads (a class head and a distillation "
                        "head, averaged at inference); fgvc trains one head: pick another family (docs/models.md)")
    if isinstance(classifier, nn.Conv2d) and classifier.kernel_size == (1, 1) and classifier.groups == 1 \
            and classifier.stride == (1, 1) and classifier.padding in ((0, 0), "valid"):
        path = next(p for p, m in net.named_modules() if m is classifier)
        net.set_submodule(path, ConvHeadAsLinear(classifier))
        classifier = net.get_submodule(path)
    for path, module in net.named_modules():
        if module is classifier and isinstance(module, nn.Linear):
            return path
    for path, module in net.named_modules():  # classifier wrapped in a container: its last Linear
        if isinstance(module, nn.Linear) and path.startswith(tuple(p for p, m in net.named_modules() if m is classifier)):
            return path
    raise UserError(f"timm model {type(net).__name__} does not end in a linear classifier (or a 1x1 convolution "
                    "on pooled features); fgvc needs one to size and train its head: docs/models.md lists the "
                    "families it refuses")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}
