"""Augmentation randomness as a function of (seed, epoch, image index).

The sampler yields ``(epoch, index)`` pairs from the main process, and the dataset seeds
torch's generator from them before the random transforms run. An image then gets the same
crop, flip and Cutout holes however many loader workers there are (with the default
per-worker seeding it would depend on which worker drew it), and workers can persist across
epochs, because the epoch travels with each index instead of living in worker state.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler):
    """Wraps an index sampler to yield ``(epoch, index)``; ``use_epoch`` also reaches the inner one.

    Not named ``set_epoch`` on purpose: Lightning Fabric calls ``set_epoch`` on a loader's
    sampler with its own count of iterations, which restarts at 0 in a resumed run.
    """

    def __init__(self, sampler: Sampler):
        self.sampler, self.epoch = sampler, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)  # DistributedSampler reshuffles its shard by epoch

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class PerSampleSeeded(Dataset):
    """``dataset[index]`` under a torch generator seeded from (seed, epoch, index).

    The global CPU generator is restored afterwards, so the caller's random stream (dropout,
    Mixup) is untouched when the loader runs in the main process.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        # the CPU generator directly: 2 us per image, where torch.random.fork_rng takes 60 us
        generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return self.dataset[index]
        finally:
            generator.set_state(saved)

    def __len__(self) -> int:
        return len(self.dataset)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed; tuple hashes of ints are the same in every process (no hash randomisation)."""
    return hash((seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF
