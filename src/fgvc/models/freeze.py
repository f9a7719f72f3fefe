"""What is trained: the paper's trainable-depth names -> requires_grad, and module modes.

Frozen parameters get no gradient and are not given to the optimizer. Frozen BatchNorm
layers stay in eval mode during training, so their running statistics keep the
pretrained values (otherwise a "frozen" layer would still drift through its statistics).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fgvc.errors import UserError

RESNET_PARTS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc")
RESNET_CHOICES = ("fc", "layer4+fc", "layer3+layer4+fc", "layer2+layer3+layer4+fc", "all")


def apply_trainable(model, spec: str) -> None:
    """Set requires_grad by ``spec``: ResNets ``fc``..``all``; ViTs and timm CNNs with stages in
    ``.blocks`` (MobileNetV2: 7 stages) ``head``, ``head+blocks:N`` (the last N), ``all``."""
    spec = spec.strip()
    for p in model.parameters():
        p.requires_grad = spec == "all"
    if spec == "all":
        return
    if model.family == "resnet":
        parts = spec.split("+")
        bad = [p for p in parts if p not in RESNET_PARTS]
        if bad:
            raise UserError(f"model.trainable={spec!r} names {bad[0]!r}, not a ResNet part; "
                            f"use one of {', '.join(RESNET_CHOICES)}")
        for part in parts:
            _set(model.net.get_submodule(part), True)
        return
    match = re.fullmatch(r"head(?:\+blocks:(\d+))?", spec)
    if not match:
        choices = "head, head+blocks:N, all" if model.family == "vit" or hasattr(model.net, "blocks") else "head, all"
        raise UserError(f"model.trainable={spec!r} is not valid for {model.name}; use one of {choices}")
    _set(model.head, True)
    if model.family == "timm":
        _set(model.net.get_classifier(), True)
    if match.group(1) is not None:
        if model.family != "vit" and not isinstance(getattr(model.net, "blocks", None), nn.Sequential):
            raise UserError(f"model.trainable={spec!r} needs a ViT or a timm model with stages in .blocks "
                            f"(MobileNet, EfficientNet); {model.name} supports head or all")
        n = int(match.group(1))
        blocks = vit_blocks(model) if model.family == "vit" else list(model.net.blocks)
        if not 0 <= n <= len(blocks):
            raise UserError(f"model.trainable={spec!r}: {model.name} has {len(blocks)} blocks")
        for block in blocks[len(blocks) - n:]:
            _set(block, True)
        if n > 0:  # what lies between the last block and the head feeds the head
            for module in (vit_final_norm(model),) if model.family == "vit" else after_blocks(model):
                _set(module, True)
            proj = getattr(getattr(model.net, "visual", None), "proj", None)
            if isinstance(proj, nn.Parameter):  # CLIP: the projection after ln_post feeds the head too
                proj.requires_grad = True


def after_blocks(model) -> list[nn.Module]:
    """Children of a timm CNN between its ``blocks`` and its classifier (MobileNetV2: conv_head, bn2)."""
    children = list(model.net.named_children())
    names = [name for name, _ in children]
    return [m for name, m in children[names.index("blocks") + 1:] if m is not model.net.get_classifier()]


def vit_blocks(model) -> list[nn.Module]:
    net = model.net
    if hasattr(net, "encoder"):  # torchvision
        return list(net.encoder.layers)
    return list(net.blocks)  # timm


def vit_final_norm(model) -> nn.Module:
    net = model.net
    if hasattr(net, "encoder"):
        return net.encoder.ln
    return net.norm if not isinstance(net.norm, nn.Identity) else net.fc_norm


def _set(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad = flag


def train_mode(model: nn.Module) -> nn.Module:
    """model.train(), except BatchNorm layers whose parameters are all frozen, or that
    ``model.batchnorm=frozen`` froze (fgvc.models.batchnorm), stay in eval mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            params = list(m.parameters())
            if getattr(m, "fgvc_frozen", False) or (params and not any(p.requires_grad for p in params)):
                m.eval()
    return model


@contextmanager
def eval_with_grad(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with autograd on, for input gradients (attacks) and activation gradients (CAMs).

    Inside: ``model.eval()`` (dropout off, BatchNorm on its running statistics) and gradients
    enabled even under a caller's ``torch.no_grad()`` or ``torch.inference_mode()``. On exit,
    exceptions included, every submodule's own train flag is restored one by one (a model may
    deliberately mix modes, e.g. a frozen backbone's BatchNorm kept in eval inside a training
    model) and so is the caller's grad / inference mode. Parameters and ``.grad`` are untouched.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            yield model
    finally:
        for m, was_training in modes:
            m.training = was_training
