"""Image pipelines: PIL -> float tensor in [0, 1]. Normalisation lives inside the model."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def eval_transform(size: int) -> v2.Compose:
    """Resize the short side to size/0.875 and centre-crop ``size`` (the usual ImageNet protocol)."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(int(round(size / 0.875)), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
    ])


def train_transform(size: int, geometric: bool = False, rotation: float = 15.0,
                    cutout: int = 0, cutout_size: float = 0.25) -> v2.Compose:
    """The eval pipeline, or with ``geometric`` random-resized-crop + flip + rotation; Cutout last."""
    if geometric:
        steps = [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(rotation),
        ]
    else:
        steps = [v2.ToImage(), v2.Resize(int(round(size / 0.875)), antialias=True), v2.CenterCrop(size)]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if cutout > 0:
        steps.append(Cutout(cutout, max(1, int(round(cutout_size * size)))))
    return v2.Compose(steps)


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


def decode_min_side(size: int, geometric: bool = False) -> int:
    """Smallest source side that loses no detail for these pipelines (see data.base.read_rgb).

    Eval resizes the short side to size/0.875. A random resized crop keeps at least
    0.35 of the area at aspect ratios down to 3/4, i.e. a side of about 0.51 of the
    image, so the image must be about size/0.51 to feed it without upsampling.
    """
    return int(round(size / 0.875)) if not geometric else int(round(size / 0.51))
