"""Image pipelines: PIL -> float tensor in [0, 1]. Normalisation lives inside the model.

The evaluation preprocessing is described once, here, and every path that scores images
uses it: training's val/test scoring, `fgvc eval`, `fgvc predict`, `fgvc serve`, the export
sidecar (``eval_preprocessing``) and the plain-PyTorch snippet in docs/export.md:

1. decode (``data.base.read_rgb``): a JPEG at the smallest DCT scale whose sides stay
   >= ``decode_min_side(size)`` (PIL's draft mode), EXIF orientation applied
   (``ImageOps.exif_transpose``), transparency composited on white, RGB;
2. resize the shorter side to ``resize_side(size, crop_ratio)`` = round(size / crop_ratio), bilinear,
   antialiased, on the uint8 image (``crop_ratio`` is the run's ``data.crop_ratio``, 0.875 by default
   and for every run written before the key existed: 256 px for a 224 crop, 512 px for 448);
3. centre-crop ``size`` x ``size``; scale to float32 in [0, 1].

A pipeline built here carries its ``decode_min_side``, so a dataset given it decodes the same
way without being told (``FineGrainedDataset`` reads the attribute).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import torch
from torchvision.transforms import v2

from fgvc.config import DataConfig
from fgvc.data import base
from fgvc.errors import UserError

EVAL_CROP_RATIO = DataConfig.crop_ratio  # 0.875: shorter side resized to size / 0.875, then the centre crop


def resize_side(size: int, crop_ratio: float = EVAL_CROP_RATIO) -> int:
    """The shorter side the eval pipeline resizes to before its centre ``size`` crop: round(size / crop_ratio),
    crop_ratio in (0, 1] (crop side / resized shorter side, timm's ``crop_pct``)."""
    if not 0 < crop_ratio <= 1:
        raise UserError(f"crop ratio {crop_ratio} is not in (0, 1]; set data.crop_ratio to the crop side over the "
                        "resized shorter side, for example 0.875 (224 of 256, 448 of 512)")
    return int(round(size / crop_ratio))


class Pipeline(v2.Compose):
    """A ``v2.Compose`` that also says the smallest side its JPEGs may be decoded at (``read_rgb``'s min_side)."""

    def __init__(self, transforms, decode_min_side: int | None):
        super().__init__(transforms)
        self.decode_min_side = decode_min_side


def eval_transform(size: int, crop_ratio: float = EVAL_CROP_RATIO) -> Pipeline:
    """Resize the short side to size / crop_ratio and centre-crop ``size`` (the usual ImageNet protocol)."""
    return Pipeline([
        v2.ToImage(),
        v2.Resize(resize_side(size, crop_ratio), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
    ], decode_min_side(size, crop_ratio=crop_ratio))


def load_eval_image(source: str | Path | BinaryIO, size: int, crop_ratio: float = EVAL_CROP_RATIO) -> torch.Tensor:
    """One image file (or file object) as the model's (1, 3, size, size) input, exactly as evaluation sees it.
    UserError when a path given by the user (fgvc predict, fgvc explain) is not a file."""
    if isinstance(source, str | Path) and not Path(source).is_file():
        raise UserError(f"image {source} is not a file; pass the path of an image file (jpg, png, ...)")
    pipeline = eval_transform(size, crop_ratio)
    return pipeline(base.read_rgb(source, pipeline.decode_min_side)).unsqueeze(0)


def eval_preprocessing(size: int, crop_ratio: float = EVAL_CROP_RATIO) -> dict:
    """The evaluation preprocessing as data, for deployments without fgvc (the export sidecar)."""
    side, min_side = resize_side(size, crop_ratio), decode_min_side(size, crop_ratio=crop_ratio)
    return {
        "steps": (f"decode (a JPEG at the smallest of PIL's draft scales 1/2, 1/4, 1/8 whose sides stay >= "
                  f"{min_side} px), apply the EXIF orientation (PIL ImageOps.exif_transpose), "
                  f"composite transparency on white, convert to RGB; resize the shorter side to "
                  f"{side} px (bilinear, antialiased, on uint8 pixels); centre-crop {size}x{size}; "
                  "scale to float32 in [0, 1]"),
        "jpeg_decode_min_side": min_side,
        "exif_orientation": True,
        "transparency": "composited on white",
        "color": "RGB",
        "resize_shorter_side": side,
        "crop_ratio": crop_ratio,
        "interpolation": "bilinear, antialiased",
        "center_crop": size,
        "scale": "uint8 / 255 -> float32 in [0, 1]",
    }


def train_transform(size: int, geometric: bool = False, rotation: float = 15.0, cutout: int = 0,
                    cutout_size: float = 0.25, random_crop: bool = False,
                    crop_ratio: float = EVAL_CROP_RATIO) -> Pipeline:
    """The train pipeline's crop, then Cutout last:

    - ``geometric``: random-resized-crop (area 0.35-1) + horizontal flip + rotation;
    - ``random_crop`` (the FGVC papers' 448-px recipe: WS-DAN, CAL, PMG, API-Net): the shorter side
      resized to ``resize_side(size, crop_ratio)`` as for evaluation, then a uniformly placed ``size`` x
      ``size`` crop of it and a horizontal flip (p = 0.5);
    - neither: the eval pipeline's resize and centre crop.
    """
    if geometric and random_crop:  # fgvc.config refuses the pair in one sentence before this is reached
        raise ValueError("geometric and random_crop are two train crops; pass one of them")
    steps: list = [v2.ToImage()]
    if geometric:
        # fill=None: torchvision's zero padding, the very pixels of fill=0 under nearest interpolation, without
        # the mask channel it samples and blends for a fill value (a third of the rotation's time at 64 px)
        steps += [v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                  v2.RandomRotation(rotation, fill=None)]
    elif random_crop:
        steps += [v2.Resize(resize_side(size, crop_ratio), antialias=True), v2.RandomCrop(size),
                  v2.RandomHorizontalFlip()]
    else:
        steps += [v2.Resize(resize_side(size, crop_ratio), antialias=True), v2.CenterCrop(size)]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if cutout > 0:
        steps.append(Cutout(cutout, max(1, int(round(cutout_size * size)))))
    return Pipeline(steps, decode_min_side(size, geometric, crop_ratio))


class Cutout(torch.nn.Module):
    """Set ``holes`` squares of side ``size`` px to zero (DeVries & Taylor 2017).

    Hole centres are uniform over the image, so a hole may be clipped at the border,
    as in the original method.
    """

    def __init__(self, holes: int, size: int):
        super().__init__()
        self.holes, self.size = holes, size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = image.clone()
        h, w = image.shape[-2:]
        for _ in range(self.holes):
            cy = int(torch.randint(h, ()).item())
            cx = int(torch.randint(w, ()).item())
            y0, y1 = max(0, cy - self.size // 2), min(h, cy - self.size // 2 + self.size)
            x0, x1 = max(0, cx - self.size // 2), min(w, cx - self.size // 2 + self.size)
            image[..., y0:y1, x0:x1] = 0.0
        return image


def decode_min_side(size: int, geometric: bool = False, crop_ratio: float = EVAL_CROP_RATIO) -> int:
    """Smallest source side that loses no detail for these pipelines (see data.base.read_rgb).

    Eval (and the ``random_crop`` train crop) resizes the short side to size / crop_ratio. A random
    resized crop keeps at least 0.35 of the area at aspect ratios down to 3/4, i.e. a side of about
    0.51 of the image, so the image must be about size/0.51 to feed it without upsampling.
    """
    return resize_side(size, crop_ratio) if not geometric else int(round(size / 0.51))
