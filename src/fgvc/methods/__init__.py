"""FGVC methods: one file and one registry row each (``method.name``; settings under ``method.*``).

A method is a ``fgvc.methods.base.Method``: a ``Classifier`` whose head reads the backbone's last
spatial feature map and which may change the training step and the inference procedure (see
``base.py`` for the override points). ``build_method`` wraps a backbone built by
``fgvc.models.create_model`` (weights already loaded into it); ``train_loss`` is the training step the
loop calls; ``check_method`` refuses, in one sentence, what a method cannot take.

Adding a method: its file here (a ``Method`` subclass whose ``make_head`` keyword arguments are its
settings, defaults the paper's), its row in ``METHODS``, its settings in ``fgvc.config.MethodConfig``
(same names, same defaults) and its section in docs/methods.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re

import torch
from torch import Tensor

from fgvc.errors import UserError
from fgvc.methods import api_net, bilinear, cal, isqrt_cov, plain, pmg, wsdan
from fgvc.methods.base import Criterion, Method, settings_of
from fgvc.models.factory import Classifier

METHODS: dict[str, type[Method]] = {
    "plain": plain.Method,  # GAP + dropout + linear: the backbone's own head, the seed's fine-tune
    "bilinear": bilinear.Method,  # Lin et al. 2015: outer products averaged, signed sqrt, L2 norm
    "isqrt_cov": isqrt_cov.Method,  # Li et al. 2018: covariance, Newton-Schulz matrix square root
    "wsdan": wsdan.Method,  # Hu et al. 2019: attention maps, attention crop / drop, centre loss
    "cal": cal.Method,  # Rao et al. 2021: WS-DAN + counterfactual (random) attention and its effect loss
    "pmg": pmg.Method,  # Du et al. 2020: jigsaw puzzles of 8, 4, 2 tiles for the last three stages, a step each
    "api_net": api_net.Method,  # Zhuang et al. 2020: nearest intra/inter pairs, gated interaction, ranking loss
}


# the settings that size a method's head (its weights grow with them)
SIZE_SETTINGS = ("bilinear_dim", "isqrt_dim", "attention_maps", "pmg_width", "api_hidden")


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), METHODS, n=1)  # the names are lower case
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown method.name={name!r}{hint}; choose one of {', '.join(METHODS)}") from None


def method_settings(method_cfg) -> dict:
    """The chosen method's settings from ``method_cfg`` (a ``fgvc.config.MethodConfig``); UserError when a
    setting the method does not read is set away from its default (it would silently do nothing)."""
    cls = method_class(method_cfg.name)
    uses = settings_of(cls)
    defaults = type(method_cfg)()
    for f in dataclasses.fields(method_cfg):
        if f.name == "name" or f.name in uses:
            continue
        value = getattr(method_cfg, f.name)
        if value != getattr(defaults, f.name):
            users = [n for n, c in METHODS.items() if f.name in settings_of(c)]
            raise UserError(f"method.{f.name}={value} is a setting of {' and '.join(users) or 'no method'}, which "
                            f"method.name={method_cfg.name} does not use; remove it or choose one of those methods")
    return {key: getattr(method_cfg, key) for key in uses}


def build_method(name: str, backbone: Classifier, num_classes: int, dropout: float = 0.0, **settings) -> Classifier:
    """``backbone`` with method ``name``'s head, training step and inference (plain: ``backbone`` itself)."""
    return method_class(name).build(backbone, num_classes, dropout, **settings)


def method_of(model) -> str:
    """The method a model was built with ('plain' for a backbone's own head)."""
    return getattr(model, "method", "plain") if isinstance(model, Method) else "plain"


def train_loss(model, forward, x: Tensor, target: Tensor, criterion: Criterion,
               autocast=contextlib.nullcontext, step=None) -> tuple[Tensor, Tensor]:
    """(loss, logits) of one training step: the method's ``train_loss`` for a method's model (under
    ``autocast()``: its passes may bypass the wrapper that autocasts), else one forward pass through
    ``forward`` (``model`` itself or its DDP/Fabric wrapper) and ``criterion``. ``step(loss)``: one optimizer
    step, for a method that takes steps of its own before the loop's (``Method.train_steps``)."""
    if isinstance(model, Method):
        with autocast():
            if step is not None:
                return model.train_steps(x, target, criterion, forward, step)
            return model.train_loss(x, target, criterion, forward)
    logits = forward(x)
    return criterion(logits, target), logits


def build_from_config(method_cfg, backbone: Classifier, num_classes: int, dropout: float = 0.0) -> Classifier:
    """``build_method`` with the name and settings of ``method_cfg`` (a ``fgvc.config.MethodConfig``); a head too
    large for the memory it is built in is one sentence naming the settings that size it."""
    settings = method_settings(method_cfg)
    try:
        return build_method(method_cfg.name, backbone, num_classes, dropout, **settings)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and "allocate" not in str(e):
            raise  # not an allocation: a bug, which stays one
        sizes = ", ".join(f"method.{k}={settings[k]}" for k in SIZE_SETTINGS if k in settings)
        raise UserError(f"method.name={method_cfg.name}'s head for {num_classes} classes does not fit in memory "
                        f"({asked_for(str(e))}); lower {sizes or 'its settings'}") from None


def asked_for(text: str) -> str:
    """'one tensor of 80.0 GB' from an allocator's message (CPU: '... allocate 80000800000 bytes'; CUDA: '... allocate
    74.51 GiB'), else its first line."""
    m = re.search(r"allocate ([\d.]+) ?(bytes|[KMGT]iB)", text)
    if not m:
        return text.strip().splitlines()[0] if text.strip() else "out of memory"
    scale = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[m.group(2)]
    return f"one tensor of {float(m.group(1)) * scale / 1e9:.1f} GB"


def describe(method_cfg) -> dict:
    """``{"name": ..., <its settings>}``: the method as metrics.json's protocol block records it."""
    return {"name": method_cfg.name, **method_settings(method_cfg)}


def check_training(cfg) -> None:
    """Preflight of a training config (``fgvc.config.Config``): the method's settings and what it cannot take."""
    method_settings(cfg.method)
    mixing = next((f"{k}={v}" for k, v in (("aug.mixup_alpha", cfg.aug.mixup_alpha),
                                          ("aug.cutmix_alpha", cfg.aug.cutmix_alpha)) if v > 0), "")
    check_method(cfg.method.name, mixing=mixing, adversarial=cfg.adv.attack != "none", devices=cfg.train.devices)
    d = cfg.data
    classes = d.pk_classes or cfg.train.batch_size // max(d.pk_images, 1)
    if method_class(cfg.method.name).needs_pk_batches and (d.sampler != "pk" or d.pk_images < 2 or classes < 2):
        raise UserError(f"method.name={cfg.method.name} pairs each image with its nearest classmate and its nearest "
                        "image of another class in the batch, so it needs batches of P >= 2 classes x K >= 2 images: "
                        "set data.sampler=pk data.pk_images=2 (or more, with train.batch_size at least twice it); now "
                        + (f"data.sampler={d.sampler}" if d.sampler != "pk" else
                           f"data.pk_classes={d.pk_classes} (set it to 0 or 2 or more)" if 0 < d.pk_classes < 2 else
                           f"data.pk_images={d.pk_images} and train.batch_size={cfg.train.batch_size}"))


def check_method(name: str, *, mixing: str = "", adversarial: bool = False, devices: int = 1) -> None:
    """Refuse, in one sentence, what method ``name`` cannot take: ``mixing`` names the Mixup/CutMix key set
    ('' none), ``adversarial`` adversarial training, ``devices`` the number of processes (DDP)."""
    cls = method_class(name)
    if mixing and not cls.takes_mixing:
        raise UserError(f"method.name={name} cannot train with {mixing} (its losses need one class per image); "
                        f"set {mixing.split('=')[0]}=0 or method.name=plain")
    if adversarial and not cls.takes_adversarial:
        raise UserError(f"method.name={name} cannot train adversarially ({cls.adversarial_refusal}); "
                        "set adv.attack=none or method.name=plain")
    if devices > 1 and not cls.takes_ddp:
        raise UserError(f"method.name={name} cannot train on {devices} devices (its extra forward passes bypass the "
                        "DDP wrapper); set train.devices=1")


__all__ = ["METHODS", "Method", "build_from_config", "build_method", "check_method", "check_training", "describe", "method_class", "method_of", "method_settings",
           "train_loss"]
