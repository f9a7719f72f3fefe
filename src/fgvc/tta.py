"""Test-time augmentation (TTA) for `fgvc eval --tta`: several views per image, probabilities averaged.

TTA numbers are reported beside the plain (single centre crop) ones, never instead of
them: papers that fold TTA into a headline number are a known source of results that do
not reproduce.

- ``flip``: the evaluation crop and its horizontal mirror (2 views).
- ``five-crop``: the image resized as for evaluation (shorter side ``size / data.crop_ratio``), then
  the four corner crops and the centre crop of ``size`` (torchvision ``FiveCrop``; 5 views).
- ``ten-crop``: those five and their mirrors (``TenCrop``; 10 views), the protocol of
  Krizhevsky et al. 2012 and Szegedy et al. 2015.

The views' softmax probabilities are averaged (``TTAModel``).
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import v2

from fgvc.data.transforms import EVAL_CROP_RATIO, Pipeline, decode_min_side, eval_transform, resize_side
from fgvc.errors import UserError

TTA_MODES = {"flip": 2, "five-crop": 5, "ten-crop": 10}  # mode -> views per image


def check_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise UserError(f"unknown test-time augmentation {mode!r}; use --tta {' or '.join(TTA_MODES)}")
    return mode


class _StackViews(torch.nn.Module):
    """The crops of ``FiveCrop``/``TenCrop`` (uint8 images) as one (V, 3, H, W) float tensor in [0, 1]."""

    def forward(self, crops):
        return torch.stack([v2.functional.to_dtype(torch.as_tensor(c), torch.float32, scale=True) for c in crops])


def tta_transform(size: int, mode: str, crop_ratio: float = EVAL_CROP_RATIO) -> Pipeline:
    """The image pipeline of a TTA mode: for ``flip`` the evaluation pipeline itself (``TTAModel`` mirrors
    the batch); for ``five-crop``/``ten-crop`` the evaluation resize (shorter side size / ``crop_ratio``, the
    run's data.crop_ratio) then the crops, giving (V, 3, size, size) per image. Decodes JPEGs as the
    evaluation pipeline does."""
    check_mode(mode)
    if mode == "flip":
        return eval_transform(size, crop_ratio)
    crop = v2.FiveCrop(size) if mode == "five-crop" else v2.TenCrop(size)
    return Pipeline([v2.ToImage(), v2.Resize(resize_side(size, crop_ratio), antialias=True), crop, _StackViews()],
                    decode_min_side(size, crop_ratio=crop_ratio))


class TTAModel(torch.nn.Module):
    """``model`` scored over the views of a TTA mode: the output is log(mean over views of softmax(logits)),
    (B, C), so its argmax is the prediction of the averaged probabilities and cross-entropy on it is their
    negative log-likelihood. Input: (B, 3, H, W) for ``flip`` (the mirror is made here), (B, V, 3, H, W)
    from ``tta_transform`` for the crop modes."""

    def __init__(self, model: torch.nn.Module, mode: str):
        super().__init__()
        self.model, self.mode = model, check_mode(mode)

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """(B, V, 3, H, W): the views the model scores."""
        if self.mode == "flip":
            return torch.stack([x, x.flip(-1)], dim=1)
        if x.ndim != 5 or x.shape[1] != TTA_MODES[self.mode]:
            raise ValueError(f"{self.mode} expects (B, {TTA_MODES[self.mode]}, 3, H, W) from tta_transform, "
                             f"got {tuple(x.shape)}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = self.views(x)
        b, v = views.shape[:2]
        logits = self.model(views.flatten(0, 1)).float().reshape(b, v, -1)
        return logits.log_softmax(-1).logsumexp(1) - math.log(v)


__all__ = ["TTA_MODES", "TTAModel", "check_mode", "tta_transform"]
