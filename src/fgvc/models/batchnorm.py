"""BatchNorm when fine-tuning pretrained weights: train, frozen, or statistics re-estimated.

Weights exported from TensorFlow Lite have BatchNorm folded into each convolution's bias; the
BatchNorm layers fgvc builds for them hold placeholder statistics (mean 0, variance 1) that
make the eval-mode network exact but a train-mode forward wrong (batch statistics of the
unnormalised activations replace the identity: top-1 agreement near 0%). Two fixes:

- ``reestimate``: measure each BatchNorm's input mean and variance on target training images
  (eval mode, before training) and store them as its running statistics, adjusting gamma and
  beta so that the eval-mode function is unchanged. Train-mode batches then see statistics
  close to the running ones, and BatchNorm normalises as it was meant to while fine-tuning.
- ``frozen``: BatchNorm layers stay in eval mode during training (their affine parameters
  still train when trainable), as detection codebases do with small batches.

``auto`` picks ``reestimate`` for folded weights and ``train`` (plain BatchNorm) otherwise.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

MODES = ("auto", "train", "frozen", "reestimate")


def resolve_mode(mode: str, folded: bool) -> str:
    """The mode that runs: ``auto`` -> ``reestimate`` for folded BatchNorm, ``train`` otherwise."""
    if mode == "auto":
        return "reestimate" if folded else "train"
    return mode


def prepare_batchnorm(model: nn.Module, cfg, make_dataset, measure: bool = True, progress: bool = True) -> str:
    """Apply ``cfg.model.batchnorm`` to ``model`` before training; returns the mode that ran.

    ``make_dataset()`` gives the training images with the eval transform (used by ``reestimate``
    only, and only when ``measure``: a resumed run loads its statistics from its checkpoint).
    Models without BatchNorm are left alone and report ``none``.
    """
    if not any(isinstance(m, _BatchNorm) for m in model.modules()):
        return "none"
    mode = resolve_mode(cfg.model.batchnorm, getattr(model, "folded_batchnorm", False))
    if mode == "frozen":
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.fgvc_frozen = True  # fgvc.models.freeze.train_mode keeps it in eval mode
    elif mode == "reestimate" and measure:
        dataset = make_dataset()
        g = torch.Generator().manual_seed(cfg.train.seed)
        pick = torch.randperm(len(dataset), generator=g)[:REESTIMATE_IMAGES].tolist()
        loader = DataLoader(Subset(dataset, pick), batch_size=64, num_workers=0)
        reestimate_statistics(model, (x for x, *_ in tqdm(loader, desc="BatchNorm statistics", leave=False,
                                                         disable=not progress)))
    return mode


REESTIMATE_IMAGES = 256  # the statistics settle within a percent after a few hundred images


@torch.no_grad()
def reestimate_statistics(model: nn.Module, batches) -> None:
    """Running statistics from ``batches`` (iterable of (B, 3, H, W) inputs), same eval function.

    For each BatchNorm with running statistics (m, v), affine (g, b) and measured input moments
    (mu, s2): new statistics (mu, s2), new affine g' = g * sqrt(s2 + eps) / sqrt(v + eps) and
    b' = b + g * (mu - m) / sqrt(v + eps), so ``(x - mu) / sqrt(s2 + eps) * g' + b'`` equals the
    old eval-mode output for every x. The moments are measured in eval mode, where every layer
    computes exactly what it did before, so one pass suffices.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    sums: dict[nn.Module, list] = {m: [0, 0.0, 0.0] for m in norms}

    def hook(module, inputs):
        x = inputs[0].detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        acc = sums[module]
        acc[0] += x.numel() // x.shape[1]
        acc[1] = acc[1] + x.sum(dims)
        acc[2] = acc[2] + (x * x).sum(dims)

    handles = [m.register_forward_pre_hook(hook) for m in norms]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for m in norms:
        n, s, s2 = sums[m]
        if not n:
            continue
        mu = s / n
        var = (s2 / n - mu * mu).clamp_min(0) * n / max(n - 1, 1)  # unbiased, as BatchNorm keeps it
        old_mean, old_var = m.running_mean.double(), m.running_var.double()
        old_std, new_std = (old_var + m.eps).sqrt(), (var + m.eps).sqrt()
        gamma = m.weight.double() if m.affine else torch.ones_like(mu)
        beta = m.bias.double() if m.affine else torch.zeros_like(mu)
        if m.affine:  # without affine parameters the function cannot be kept: plain re-estimation
            m.weight.copy_(gamma * new_std / old_std)
            m.bias.copy_(beta + gamma * (mu - old_mean) / old_std)
        m.running_mean.copy_(mu)
        m.running_var.copy_(var)


__all__ = ["MODES", "prepare_batchnorm", "reestimate_statistics", "resolve_mode"]
