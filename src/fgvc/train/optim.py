"""The optimizer and the learning-rate schedule of a training run, from ``train.*``.

AdamW on the trainable parameters (frozen ones never reach it); ``train.head_lr_scale`` trains the head
(the layers a run adds, which start from scratch) at a multiple of ``train.lr``, as the FGVC methods' code
trains its new layers (jiangtaoxie/fast-MPN-COV ``finetune/finetune.sh`` and ``main.py``: 5 x for iSQRT-COV's
classifier only, its pretrained reduction at the backbone's rate; PMG's ``train.py``: 0.002 for all new layers,
0.0002 for the backbone). Here the whole head is scaled, a method's reduction included. ``train.filter_bias_and_bn``
takes weight decay off 1-d parameters (biases, norm gains, CLIP's class and position
embeddings are 2-d and keep it), as timm's ``param_groups_weight_decay`` and CLIP's own
training do. Schedules: ``multistep`` (the paper: lr x gamma at each milestone epoch, stepped
once per epoch) and ``cosine`` (stepped once per optimizer step: a linear warm-up over
``train.warmup`` of all steps, then half a cosine down to 0; Loshchilov & Hutter 2017, SGDR).
"""

from __future__ import annotations

import math

import torch

from fgvc import config as config_mod


def build_optimizer(cfg: config_mod.Config, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW(lr=train.lr) over ``model``'s trainable parameters. With ``train.head_lr_scale`` k != 1 the
    head (``head_parameters``) is a group of its own at k x train.lr, after the backbone's group (every
    schedule scales each group's own rate); with ``train.filter_bias_and_bn`` each of those splits in two:
    parameters with 2 or more dimensions decay by ``train.weight_decay``, 1-d ones not at all. A group's
    ``lr_scale`` is its rate over train.lr."""
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    head = {id(p) for p in head_parameters(model)} if t.head_lr_scale != 1 else set()
    groups = []
    for scale, in_head in ((1.0, False), (t.head_lr_scale, True)):
        part = [p for p in params if (id(p) in head) == in_head]
        for no_decay in ((False, True) if t.filter_bias_and_bn else (False,)):
            chosen = [p for p in part if (p.ndim < 2) == no_decay] if t.filter_bias_and_bn else part
            if chosen:
                groups.append({"params": chosen, "lr": t.lr * scale, "lr_scale": scale,
                               "weight_decay": 0.0 if no_decay else t.weight_decay,
                               **({"no_decay": True} if no_decay else {})})
    return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)


def head_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The layers a run adds to the backbone: a method's whole head (``head_module``: second-order
    pooling, attention, PMG's blocks and classifiers, API-Net's MLP), else the final linear layer."""
    head = getattr(model, "head_module", None)
    return list((model.head if head is None else head).parameters())


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The scheduled train.lr now (the first group's rate over its ``lr_scale``): what the logs record."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


def cosine_factor(step: int, total: int, warmup: int) -> float:
    """The lr multiplier at 0-based ``step`` of ``total``: (step + 1) / warmup while warming up, then
    0.5 * (1 + cos(pi * t)) with t going from 0 to 1 over the remaining steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def build_scheduler(cfg: config_mod.Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """``(scheduler, per_step)``: ``per_step`` says whether the loop steps it after every optimizer step
    (cosine) or once per epoch (multistep). A resumed run restores its position from its state."""
    t = cfg.train
    if t.schedule == "cosine":
        total = max(1, t.epochs * steps_per_epoch)
        warmup = int(t.warmup * total)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total, warmup)), True
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=t.milestones, gamma=t.gamma), False


def place_per_step_schedule(scheduler, optimizer: torch.optim.Optimizer, epochs_done: int, steps_per_epoch: int) -> None:
    """Move a resumed per-step schedule to the start of epoch ``epochs_done`` (0-based) as counted in today's
    steps per epoch, with the rate its (today's) schedule gives there. A restored schedule counts the steps
    of the epochs it ran; when the steps per epoch change on resume (another train.batch_size, train.devices
    or skipped images), that count sits at another fraction of the new schedule (6 of 20 steps after 2 of 4
    epochs at 3 steps, where 10 of 20 is right at 5): the rate restarts too high and never reaches the end.
    And the restored rate is the old schedule's, so with another train.epochs the first step would train at
    it. Unchanged, this computes what the schedule's own step did (the same float operations)."""
    steps = epochs_done * steps_per_epoch
    scheduler.last_epoch = steps
    lrs = [base * factor(steps) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports


__all__ = ["base_lr", "build_optimizer", "build_scheduler", "cosine_factor", "head_parameters",
           "place_per_step_schedule"]
