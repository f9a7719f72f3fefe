"""The maps every explanation returns: (B, H, W) float32 in [0, 1] at the input's size, and the
``target`` argument they share (the predicted class when None, an int for the whole batch, or one
class per sample)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Target = int | Sequence[int] | Tensor | None

def normalize_maps(maps: Tensor, size) -> Tensor:
    """(B, h, w) -> (B, H, W) float32: bilinear upsampling to ``size``, then per-image min-max to [0, 1]."""
    maps = maps.detach().float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    flat = maps.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    span = hi - lo
    # a flat map (all zero: no positive evidence) has no location; it stays zero instead of
    # turning rounding noise into a full-range map
    tiny = 1e-6 * torch.maximum(hi.abs(), lo.abs())
    ok = (span > tiny) & (span > 0)
    out = (maps - lo[:, None, None]) / torch.where(ok, span, torch.ones_like(span))[:, None, None]
    return torch.where(ok[:, None, None], out, torch.zeros_like(out)).clamp_(0, 1)
