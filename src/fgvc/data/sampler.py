"""The P x K class-balanced batch sampler (``data.sampler=pk``): every training batch holds exactly P
classes with K images each.

Metric-learning and pair-based FGVC methods (API-Net's pairs, a center loss) need each image's
classmates in its batch. The scheme is the one person re-identification made standard (Hermans et
al. 2017, "In Defense of the Triplet Loss", the "PK" batches; API-Net's and Hawkeye's
``BalancedBatchSampler``): each batch draws P distinct classes uniformly at random, and the next K
images of each from that class's own shuffle. Within an epoch a class's images repeat only once its
shuffle is used up; a rest shorter than K is then dropped and the class reshuffled whole. Every epoch
starts each class on a fresh shuffle, so a class drawn less often than its size calls for leaves
images unused that epoch, and one drawn more often repeats them: rare classes appear as often as
common ones (the batches are class-balanced, the epoch is not image-uniform).

Choices, each a promise the tests check:

- an epoch has ``len(labels) // (P * K * world)`` batches per process: the images of a plain
  epoch, so schedules and patience keep their meaning;
- the batches are a function of (seed, epoch) alone: reshuffled each epoch, exact on resume;
- a class with fewer than K images is refused (one sentence), never padded with repeats: an
  image drawn twice in an epoch gets the same augmentation (``fgvc.data.seeding``), so a repeat
  would be an identical copy, not a K-th view;
- several processes (DDP) share one sequence of batches: process r takes batches r, r + world,
  r + 2 world, ... of it, so no two processes train on the same batch and together they see what
  a single process with world times the batches would.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.utils.data import Sampler

from fgvc.data.seeding import sample_seed
from fgvc.errors import UserError


def pk_shape(batch_size: int, classes: int, images: int) -> tuple[int, int]:
    """(P, K) of ``data.pk_classes`` (0: ``batch_size // K``) and ``data.pk_images`` = K, checked
    against ``train.batch_size``, which P x K must equal."""
    if images < 1:
        raise UserError(f"data.pk_images={images} must be 1 or more images per class")
    p = classes or batch_size // images
    if p < 1:  # only with data.pk_classes=0: K alone is larger than the batch
        raise UserError(f"data.sampler=pk makes batches of data.pk_classes x data.pk_images images, and "
                        f"data.pk_images={images} is more than train.batch_size={batch_size}; set train.batch_size to "
                        f"a multiple of {images} (for example {2 * images}) or data.pk_images to at most "
                        f"{max(1, batch_size // 2)}")
    if p * images != batch_size:
        fix = (f"set train.batch_size={p * images}" if classes else
               f"set train.batch_size to a multiple of {images} (for example {max(1, batch_size // images) * images})")
        raise UserError(f"data.sampler=pk makes batches of data.pk_classes x data.pk_images images, and "
                        f"{p} x {images} is not train.batch_size={batch_size}; {fix}, or change data.pk_images")
    return p, images


class ClassBalancedBatches(Sampler):
    """P x K batches of ``(epoch, index)`` keys (``fgvc.data.seeding.PerSampleSeeded``'s), as a
    DataLoader's ``batch_sampler``: one process's share (``rank`` of ``world``) of a sequence of
    batches drawn from (``seed``, epoch). ``use_epoch`` picks the epoch; ``labels`` are the train
    split's 0-based labels; ``where`` names the split in messages."""

    def __init__(self, labels: list[int], classes: int, images: int, seed: int, rank: int = 0, world: int = 1,
                 where: str = "the train split"):
        self.p, self.k, self.seed, self.rank, self.world = classes, images, seed, rank, world
        self.n = len(labels)
        by_class: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            by_class[int(label)].append(index)
        self.members = [torch.tensor(by_class[c]) for c in sorted(by_class)]
        self.labels = sorted(by_class)
        few = [(c, len(m)) for c, m in zip(self.labels, self.members, strict=True) if len(m) < images]
        if few:
            c, n = min(few, key=lambda f: f[1])
            raise UserError(f"data.sampler=pk needs data.pk_images={images} images of every class in {where}, and "
                            f"class {c} has {n} ({len(few)} classes have fewer than {images}); lower data.pk_images "
                            f"to {n} or less, or leave the small classes out with data.classes")
        if classes > len(self.members):
            raise UserError(f"data.sampler=pk asks for data.pk_classes={classes} classes per batch, and {where} "
                            f"has {len(self.members)}; lower data.pk_classes (and train.batch_size with it)")
        if len(self) == 0:
            raise UserError(f"{where} has {self.n} images, fewer than one batch of {classes} x {images} per process "
                            f"({world} processes); lower data.pk_classes or data.pk_images, or use fewer devices")
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // (self.p * self.k * self.world)

    def batches(self, epoch: int):
        """Every process's batches of ``epoch`` in order (lists of dataset indices, class by class)."""
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        # what is left of each class's shuffle: empty at the start of every epoch (nothing carries over)
        cycles = [torch.empty(0, dtype=torch.long) for _ in self.members]
        for _ in range(len(self) * self.world):
            batch = []
            for c in torch.randperm(len(self.members), generator=g)[:self.p].tolist():
                if len(cycles[c]) < self.k:  # a fresh shuffle of the whole class; a rest shorter than K is dropped
                    cycles[c] = self.members[c][torch.randperm(len(self.members[c]), generator=g)]
                batch += cycles[c][:self.k].tolist()
                cycles[c] = cycles[c][self.k:]
            yield batch

    def __iter__(self):
        epoch = self.epoch
        for b, batch in enumerate(self.batches(epoch)):
            if b % self.world == self.rank:
                yield [(epoch, i) for i in batch]
