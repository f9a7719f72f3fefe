"""Real images for GAN training: decoded once into memory, served as seeded batches.

Decoding a dataset once (uint8, about 12 KiB per 64 px image) instead of n_dis times per
iteration makes CPU training several times faster, and a batch that depends only on
(seed, batch index) makes a resumed run draw exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fgvc.errors import UserError


def load_into_memory(dataset: Dataset, image_size: int, num_workers: int = 0) -> tuple[Tensor, Tensor]:
    """All images of ``dataset`` as uint8 (N, 3, S, S) and labels (N,) int64.

    The dataset must yield ``(image, label, ...)`` with image a float tensor (3, S, S) in [0, 1].
    """
    if len(dataset) == 0:
        raise UserError("the GAN training dataset is empty; check data.root and data.split")
    loader = DataLoader(dataset, batch_size=64, shuffle=False, num_workers=num_workers)
    images, labels = [], []
    for batch in loader:
        x, y = batch[0], batch[1]
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, image_size, image_size):
            shape = tuple(x.shape[1:]) if isinstance(x, Tensor) else type(x).__name__
            raise UserError(
                f"GAN training images must be float tensors of shape (3, {image_size}, {image_size}), got {shape}; "
                f"build the dataset with transform=eval_transform({image_size}) or set data.image_size"
            )
        images.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
        labels.append(torch.as_tensor(y, dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


class RealBatches:
    """Batch k of an endless stream of seeded per-epoch permutations, as floats in [-1, 1]."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, seed: int, flip: bool = True):
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.flip = batch_size, seed, flip
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            # keep the two newest epochs: a batch straddles at most an epoch boundary when N >= batch
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            seed = self.seed * 1_000_003 + epoch
            self._perms[epoch] = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
        return self._perms[epoch]

    def indices(self, k: int) -> Tensor:
        """Dataset indices of batch k (0-based)."""
        n = len(self.images)
        positions = torch.arange(k * self.batch_size, (k + 1) * self.batch_size)
        epochs, offsets = positions // n, positions % n
        out = torch.empty(self.batch_size, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            mask = epochs == epoch
            out[mask] = self._perm(epoch)[offsets[mask]]
        return out

    def batch(self, k: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        idx = self.indices(k)
        x = self.images[idx].to(device).float() / 127.5 - 1.0  # [0, 255] -> [-1, 1]
        if self.flip:
            mirror = torch.rand(len(idx), generator=torch.Generator().manual_seed(self.seed * 7919 + k)) < 0.5
            x = torch.where(mirror.to(device)[:, None, None, None], x.flip(3), x)
        return x, self.labels[idx].to(device)
