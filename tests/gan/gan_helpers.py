"""Tiny in-memory datasets for the GAN tests: one saturated colour blob per class."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from fgvc.gan.config import GanConfig, GanDataConfig

# class colours far apart in RGB, so "mean colour of a class" is a class signature
COLOURS = {"red_blob": (0.9, 0.1, 0.1), "green_blob": (0.1, 0.9, 0.1), "blue_blob": (0.1, 0.1, 0.9)}


class BlobDataset(Dataset):
    """Grey noisy background with a disc of the class colour at a random place and size."""

    def __init__(self, per_class: int = 16, size: int = 32, seed: int = 0):
        self.class_names = list(COLOURS)
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.items = []
        for label, colour in enumerate(COLOURS.values()):
            for _ in range(per_class):
                cy, cx = (torch.rand(2, generator=g) * size * 0.5 + size * 0.25).tolist()
                r = float(torch.rand(1, generator=g)) * size * 0.15 + size * 0.25
                disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float()
                bg = 0.5 + 0.05 * torch.randn(3, size, size, generator=g)
                img = bg * (1 - disc) + torch.tensor(colour)[:, None, None] * disc
                self.items.append((img.clamp(0, 1), label))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def class_mean_colours(images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes, 3) mean RGB of each class's images."""
    return torch.stack([images[labels == c].float().mean(dim=(0, 2, 3)) for c in range(n_classes)])


def tiny_config(tmp_path, **kw) -> GanConfig:
    """32 px, ch 8, batch 8: a few milliseconds per update on one CPU thread."""
    base = dict(data=GanDataConfig(name="blobs", root="", image_size=32, num_workers=0), iterations=4,
                batch_size=8, n_dis=2, ch=8, z_dim=16, sample_every=2, checkpoint_every=2,
                sample_classes=3, device="cpu", out=str(tmp_path / "runs"))
    base.update(kw)
    return GanConfig(**base)
