"""Training augmentation on the accelerator (``data.augment_on=device``), batched, with kornia.

The host's part shrinks to decoding and one fixed resize (``host_transform``): every image
leaves the loader as the same-sized uint8 square, so batches are 4x smaller than float ones
on their way to the device, and the decoded-image cache (``fgvc.data.cache``) can hold them
whole (all the host steps are fixed ones). On the device, ``DeviceAugment`` scales to
[0, 1] and runs, as ``aug.*`` says:

- ``aug.geometric``: random-resized-crop to ``size`` (area 0.35-1 of the square, aspect 3/4-4/3),
  horizontal flip (p = 0.5) and rotation (uniform in +-``aug.rotation`` degrees, zeros outside),
  kornia's ``RandomResizedCrop``, ``RandomHorizontalFlip`` and ``RandomRotation``;
- ``aug.random_crop``: a ``size`` x ``size`` crop placed uniformly in the host's square of side
  ``resize_side(size, data.crop_ratio)`` (512 for 448 at 0.875) and a horizontal flip (p = 0.5),
  kornia's ``RandomCrop`` and ``RandomHorizontalFlip``: the FGVC papers' resize-then-random-crop;
- ``aug.cutout``: Cutout (DeVries & Taylor 2017), holes of side ``aug.cutout_size * size`` with
  centres uniform over the image, clipped at the border, as ``data.transforms.Cutout``.

Without ``aug.geometric`` or ``aug.random_crop`` the host resizes the short side to
size / data.crop_ratio and centre-crops ``size``, and the output equals the host pipeline's exactly
(before Cutout). Normalisation
stays inside the model, which takes [0, 1].

Randomness: all parameters are drawn on the CPU from a generator seeded by (seed, epoch, batch
index, process rank), under ``torch.random.fork_rng`` (the caller's stream is untouched), and
kornia is left on the CPU for sampling, so a batch's augmentation is the same on every device
and a run resumed at an epoch boundary repeats it. Nothing reads a device tensor back to the
host. Differences from the host path (``data.augment_on=host``): the crop is taken from the
centred square of side ``decode_min_side(size, geometric=True)`` (``aug.random_crop``: of the
resized image's centred square) rather than the whole image,
the crop's resize and the rotation are bilinear without antialiasing (the host's crop is
antialiased, its rotation nearest-neighbour), and the random draws differ; results are
therefore not bit-equal to host augmentation.
"""

from __future__ import annotations

import hashlib

import kornia.augmentation as K
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fgvc.data.transforms import EVAL_CROP_RATIO, Pipeline, decode_min_side, resize_side

CROP_SCALE = (0.35, 1.0)  # as data.transforms.train_transform's RandomResizedCrop
CROP_RATIO = (3 / 4, 4 / 3)


def host_side(size: int, geometric: bool, random_crop: bool = False, crop_ratio: float = EVAL_CROP_RATIO) -> int:
    """Side of the uint8 square the host sends: the square a random-resized-crop to ``size`` needs to
    avoid upsampling (``decode_min_side``) with ``geometric``; the evaluation resize side
    (``resize_side(size, crop_ratio)``) that ``random_crop`` crops from; else the crop itself."""
    if geometric:
        return decode_min_side(size, True)
    return resize_side(size, crop_ratio) if random_crop else size


def host_transform(size: int, geometric: bool = False, random_crop: bool = False,
                   crop_ratio: float = EVAL_CROP_RATIO) -> Pipeline:
    """PIL image -> (3, S, S) uint8 tensor, S = ``host_side(size, geometric, random_crop, crop_ratio)``: the
    short side resized (bilinear, antialiased) and the centre square cropped. Fixed steps only, so cacheable
    whole."""
    short = decode_min_side(size, True) if geometric else resize_side(size, crop_ratio)
    side = host_side(size, geometric, random_crop, crop_ratio)
    return Pipeline([v2.ToImage(), v2.Resize(short, antialias=True), v2.CenterCrop(side)],
                    decode_min_side(size, geometric, crop_ratio))


def batch_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed for one batch's augmentation, the same in every process and Python run."""
    digest = hashlib.blake2b(f"fgvc-device-aug:{seed}:{epoch}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class DeviceAugment:
    """uint8 (B, 3, S, S) batch on any device -> float32 (B, 3, size, size) in [0, 1], augmented.

    ``augment(x, epoch, step)``; S is ``host_side(size, geometric, random_crop, crop_ratio)``. Raises
    ValueError for a batch of another shape or dtype (the loader did not use ``host_transform``).
    """

    def __init__(self, size: int, geometric: bool = False, rotation: float = 15.0, cutout: int = 0,
                 cutout_size: float = 0.25, seed: int = 0, rank: int = 0, random_crop: bool = False,
                 crop_ratio: float = EVAL_CROP_RATIO):
        if geometric and random_crop:  # fgvc.config refuses the pair in one sentence before this is reached
            raise ValueError("geometric and random_crop are two train crops; pass one of them")
        self.size, self.geometric, self.seed, self.rank = size, geometric, seed, rank
        self.random_crop, self.crop_ratio = random_crop, crop_ratio
        self.holes, self.hole = cutout, max(1, int(round(cutout_size * size)))
        # a tuple, not submodules: .to(device) never reaches them, so parameters are drawn on the CPU
        self.steps = ()
        if geometric:
            self.steps = (
                K.RandomResizedCrop((size, size), scale=CROP_SCALE, ratio=CROP_RATIO, p=1.0, cropping_mode="slice"),
                K.RandomHorizontalFlip(p=0.5),
                K.RandomRotation(degrees=rotation, p=1.0),
            )
        elif random_crop:
            self.steps = (K.RandomCrop((size, size), p=1.0, cropping_mode="slice"), K.RandomHorizontalFlip(p=0.5))

    @property
    def in_side(self) -> int:
        return host_side(self.size, self.geometric, self.random_crop, self.crop_ratio)

    def __call__(self, x: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (3, self.in_side, self.in_side):
            raise ValueError(f"device augmentation takes (B, 3, {self.in_side}, {self.in_side}) uint8 batches "
                             f"(fgvc.train.device_aug.host_transform), got {tuple(x.shape)} {x.dtype}")
        x = TF.to_dtype(x, torch.float32, scale=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed(self.seed, epoch, step, self.rank))
            for aug in self.steps:
                x = aug(x, params=aug.forward_parameters(x.shape))
            if self.holes:
                centres = torch.stack([torch.randint(self.size, (x.shape[0], self.holes)) for _ in "yx"])
                x = self._cutout(x, centres.to(x.device, non_blocking=True))
        return x

    def _cutout(self, x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Zero ``holes`` squares per image; ``centres`` (2, B, holes) as (y, x) pixel indices."""
        start = centres - self.hole // 2
        grid = torch.arange(self.size, device=x.device)
        inside = (grid >= start[..., None]) & (grid < start[..., None] + self.hole)  # (2, B, holes, size)
        mask = (inside[0][..., :, None] & inside[1][..., None, :]).any(1)  # (B, size, size)
        return x.masked_fill(mask[:, None], 0.0)


def build_device_augment(aug_cfg, size: int, seed: int, rank: int = 0,
                         crop_ratio: float = EVAL_CROP_RATIO) -> DeviceAugment:
    """A ``DeviceAugment`` from the ``aug.*`` config keys (``crop_ratio``: data.crop_ratio)."""
    return DeviceAugment(size, aug_cfg.geometric, aug_cfg.rotation, aug_cfg.cutout, aug_cfg.cutout_size, seed, rank,
                         aug_cfg.random_crop, crop_ratio)
