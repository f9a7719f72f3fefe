"""Batch transforms (x, y) -> (x, y_soft): Mixup and CutMix via timm, with label smoothing folded in."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup


def build_mixing(mixup_alpha: float, cutmix_alpha: float, label_smoothing: float, num_classes: int):
    """timm's Mixup (batch mode; when both alphas are set it picks one per batch, 50/50) or None."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    return Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=label_smoothing,
                 num_classes=num_classes, mode="batch", prob=1.0, switch_prob=0.5)


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing: 1 - s + s/C on the true class, s/C elsewhere."""
    off = smoothing / num_classes
    return torch.full((y.shape[0], num_classes), off, device=y.device).scatter_(1, y.view(-1, 1), 1.0 - smoothing + off)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c target_c log softmax(logits)_c; target rows sum to 1."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
