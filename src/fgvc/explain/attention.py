"""A method's own attention maps (WS-DAN, CAL; fgvc.methods): where the model's attention branch looks.

WS-DAN locates the object with the mean of its M attention maps (paper section 3.5) and crops there at
inference; ``attention`` returns that mean map, upsampled to the input (bilinear) and min-max normalised
per image like CAM and Grad-CAM, so it can be drawn and scored against boxes beside them. The maps do
not depend on the class: ``target`` is accepted for a uniform interface and ignored.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fgvc.errors import UserError
from fgvc.explain.maps import Target, normalize_maps
from fgvc.models.freeze import eval_with_grad


def check_attention(model: nn.Module):
    """``model.attention_maps`` (images -> (B, M, h, w) maps), else UserError: the model has no attention branch."""
    maps_of = getattr(model, "attention_maps", None)
    if maps_of is None:
        method = getattr(model, "method", "plain")
        raise UserError(f"attention maps are drawn by methods with an attention branch (method.name=wsdan or cal); "
                        f"this model's method is {method}: use --method gradcam")
    return maps_of


def attention(model: nn.Module, x: Tensor, target: Target = None) -> Tensor:
    """(B, H, W) in [0, 1]: the mean attention map of ``model`` (a WS-DAN or CAL model) for images ``x`` in [0, 1]."""
    maps_of = check_attention(model)
    with eval_with_grad(model), torch.no_grad():
        maps = maps_of(x)
    return normalize_maps(maps.float().mean(dim=1), x.shape[-2:])


__all__ = ["attention", "check_attention"]
