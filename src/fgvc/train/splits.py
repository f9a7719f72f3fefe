"""The three splits of a training run and their loaders, one process's shard each under DDP.

Model selection only ever looks at val (carved from the official train split, stratified and
seeded); test is scored once, on the best checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from fgvc import config as config_mod
from fgvc import errors
from fgvc.data import build_dataset, resolve_num_workers
from fgvc.data.base import check_classes_have_images, drop_unreadable, find_unopenable
from fgvc.data.cache import cache_datasets
from fgvc.data.generated import mix_generated
from fgvc.data.sampler import ClassBalancedBatches, pk_shape
from fgvc.data.seeding import EpochSampler, PerSampleSeeded
from fgvc.data.transforms import Pipeline, decode_min_side, eval_transform
from fgvc.errors import UserError, message


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    skipped: int  # unreadable images left out (data.skip_bad_images)

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names


def build_splits(cfg: config_mod.Config, train_inputs: Pipeline, log=print) -> Splits:
    """train (through ``train_inputs``, the per-image train pipeline), val and test (eval pipeline)."""
    d, seed = cfg.data, cfg.train.seed
    train_ds = build_dataset(d.name, d.root, "train", train_inputs, d.val_fraction, seed, d.classes)
    scored = eval_transform(d.image_size, d.crop_ratio)
    val_ds = build_dataset(d.name, d.root, "val", scored, d.val_fraction, seed, d.classes)
    test_ds = build_dataset(d.name, d.root, "test", scored, d.val_fraction, seed, d.classes)
    skipped = 0
    if d.skip_bad_images:
        # Decoded once, before training (not dropped as met), so every epoch and every resumed run
        # sees the same images and the count is exact; splits were drawn before, so val stays put.
        bad = [b for ds in (train_ds, val_ds, test_ds) for b in drop_unreadable(ds)]
        skipped = len(bad)
        for _, why in bad[:10]:
            log(f"skipped: {why}")
        if skipped:
            log(f"skipped {skipped} unreadable images (data.skip_bad_images=true)")
        check_classes_have_images(train_ds.samples, train_ds.class_names,
                                  f"{train_ds.root} once its unreadable images are left out", "train")
    else:  # every file of every split opens: a broken test image is found now, not after the last epoch
        check_files_open(d.name, [train_ds, val_ds, test_ds])
    train_ds = mix_generated(train_ds, d.generated_root, d.train_source, d.generated_ratio, seed)
    # decode large JPEGs at a reduced DCT scale when the pipeline would shrink them anyway
    train_ds.decode_min_side = decode_min_side(d.image_size, cfg.aug.geometric, d.crop_ratio)
    val_ds.decode_min_side = test_ds.decode_min_side = decode_min_side(d.image_size, crop_ratio=d.crop_ratio)
    if len(val_ds) == 0:
        raise UserError("the validation split is empty; set data.val_fraction above 0 (for example 0.1)")
    return Splits(train_ds, val_ds, test_ds, skipped)


def check_files_open(name: str, datasets: list[Dataset]) -> None:
    """UnreadableImage naming the files of ``datasets`` that do not open as images (headers only; the
    caller adds how to list and skip them)."""
    bad = [b for ds in datasets for b in find_unopenable(ds.samples)]
    if bad:
        first = "; ".join(why.split("; remove or replace it")[0] for _, why in bad[:3])
        what = f"{len(bad)} images of {name} cannot be opened" if len(bad) > 1 else f"an image of {name} cannot be opened"
        raise errors.UnreadableImage(f"{what}, found before training ({first}{'; ...' if len(bad) > 3 else ''}); "
                                     f"remove or replace {'them' if len(bad) > 1 else 'it'}")


class TrainBatches(Sampler):
    """Batches of ``sampler`` (a sampler of one process's shard) as DataLoader's batch_sampler, with a
    last batch that every step can train on: trimmed to an even size when Mixup/CutMix pair its
    images (``even``), and dropped when it would hold fewer than ``least`` images (a batch of one
    image has no batch statistics for a training BatchNorm). Shards have equal lengths, so every
    process takes the same number of steps."""

    def __init__(self, sampler: Sampler, batch_size: int, even: bool = False, least: int = 1):
        self.sampler, self.batch_size, self.even, self.least = sampler, batch_size, even, least

    def _last(self, size: int) -> int:
        size -= size % 2 if self.even else 0
        return size if size >= self.least else 0

    def __iter__(self):
        batch = []
        for key in self.sampler:
            batch.append(key)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        size = self._last(len(batch))
        if size:
            yield batch[:size]

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + bool(self._last(rest))


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    sampler: EpochSampler | ClassBalancedBatches  # reshuffles per epoch (``use_epoch``)
    generator: torch.Generator  # the one-process shuffle's generator, seeded per epoch


def build_loaders(fabric: Fabric, splits: Splits, cfg: config_mod.Config, even: bool, least: int,
                  progress: bool = True) -> Loaders:
    """Loaders of one process's shards. Several devices (DDP): train.batch_size is per device; each
    process trains on its own shuffled shard (reshuffled per epoch from the seed, so resume stays
    exact) and evaluates an unpadded shard of val/test whose sums are added up across processes.
    ``even``/``least``: see ``TrainBatches``; ``progress``: the image cache's bars (off for --quiet)."""
    rank, world, bs = fabric.global_rank, fabric.world_size, cfg.train.batch_size
    workers = resolve_num_workers(cfg.data.num_workers, fabric.device.type == "cuda")
    if world > min(len(splits.val), len(splits.test)):
        raise UserError(f"train.devices={world} is more than the {min(len(splits.val), len(splits.test))} images "
                        "of the smallest evaluation split; every process needs at least one: use fewer devices")
    if cfg.data.cache != "off":  # decoded once into memory-mapped files (fgvc.data.cache); batches stay equal
        splits.train, splits.val, splits.test = cache_datasets(
            [splits.train, splits.val, splits.test], cfg.data.cache, cfg.data.cache_budget_gb,
            cfg.data.cache_dir or None, workers, progress=progress and fabric.is_global_zero, log=fabric.print)
    generator = torch.Generator()
    if cfg.data.sampler == "pk":  # P classes x K images per batch, drawn from (seed, epoch); full batches only
        p, k = pk_shape(bs, cfg.data.pk_classes, cfg.data.pk_images)
        sampler = batches = ClassBalancedBatches(splits.train.targets, p, k, cfg.train.seed, rank, world,
                                                 where=f"the train split of {cfg.data.name} in {cfg.data.root}")
    else:
        sampler = EpochSampler(DistributedSampler(splits.train, world, rank, shuffle=True, seed=cfg.train.seed)
                               if world > 1 else RandomSampler(splits.train, generator=generator))
        batches = TrainBatches(sampler, bs, even=even, least=least)
    if len(batches) == 0:
        raise UserError(f"the train split of {cfg.data.name} in {cfg.data.root} has {len(sampler)} image per "
                        "process, and a training batch needs 2 (BatchNorm or Mixup/CutMix); add images or use "
                        "fewer train.devices")
    # Workers persist across epochs: no randomness lives in them (see fgvc.data.seeding).
    train = DataLoader(PerSampleSeeded(splits.train, cfg.train.seed), batch_sampler=batches, num_workers=workers,
                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)

    def shard(ds, persistent=True):
        # every world-th image from rank: the shards cover the split exactly once, without the padding
        # DistributedSampler adds to even them out (repeated images would bias the scores)
        return DataLoader(ds, batch_size=bs * 2, sampler=range(rank, len(ds), world), num_workers=workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=persistent and workers > 0)

    train = fabric.setup_dataloaders(train, use_distributed_sampler=False)
    val, test = fabric.setup_dataloaders(shard(splits.val), shard(splits.test, persistent=False),  # test: used once
                                         use_distributed_sampler=False)
    return Loaders(train, val, test, sampler, generator)


def all_or_none(fabric: Fabric, batches):
    """``batches``, in step with the other processes: when one process meets a UserError (an unreadable
    image in its shard), every process raises that sentence instead of the others dying in a
    collective (a gloo/NCCL traceback). Shards of different lengths (val/test) keep syncing until all
    are done. One process: the batches as they are."""
    if fabric.world_size == 1:
        yield from batches
        return
    it, done = iter(batches), False
    while True:
        item, error = None, None
        if not done:
            try:
                item = next(it)
            except StopIteration:
                done = True
            except UserError as e:
                error = e
        flags = fabric.all_reduce(torch.tensor([float(error is not None), float(not done)], device=fabric.device),
                                  reduce_op="sum")
        failed, busy = (float(v) for v in flags)
        if failed:
            _raise_first_error(error)
        if not busy:
            return
        if not done:
            yield item


def _raise_first_error(error: BaseException | None) -> None:
    """Every process raises the error of the lowest-ranked process that had one."""
    sent = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(sent, (type(error).__name__, message(error)) if error is not None else None)
    kind, text = next(s for s in sent if s is not None)
    kinds = {c.__name__: c for c in (UserError, errors.UnreadableImage, errors.ImageTooLarge)}
    raise kinds.get(kind, UserError)(text) from None
