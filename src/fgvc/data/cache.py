"""Decoded-image cache: each image of a split decoded once, its pixels kept in a memory-mapped file.

An fgvc pipeline (``data.transforms``) starts with steps that draw no random numbers
(``ToImage``, ``Resize``, ``CenterCrop``); the cache stores what those steps make of each
image, as uint8 HWC pixels, and the dataset then runs the rest of the pipeline (random
crop, flip, rotation, scaling to [0, 1], Cutout) on the cached pixels. So:

- the evaluation pipeline (resize the short side to size / data.crop_ratio, centre-crop ``size``) caches
  the final ``size`` x ``size`` crop: a fixed shape, and nothing left to compute but the scaling;
- the geometric training pipeline (random-resized-crop first) caches the decoded image as
  ``read_rgb`` gives it (a JPEG at its reduced DCT scale, ``decode_min_side``), whole;
- the ``aug.random_crop`` training pipeline caches the resized image its random crop is taken from.

Images are stored at their own shapes, one after the other, with an index of offsets and
shapes (``<stem>.json``) beside the pixels (``<stem>.u8``). Because the cached pixels are
exactly the tensor the uncached path would feed to its first random step, and
``PerSampleSeeded`` seeds that step from (seed, epoch, index) as before, batches are equal,
bit for bit, with and without the cache, and a resumed run ends where an uninterrupted one does.

The stem names the dataset, split and decode side and two digests: one of what is cached
(the pipeline's fixed steps, the decode side and the image paths), one of the files' sizes
and modification times, so a changed image makes a new cache, and the build removes the
old one. The pixels are written to a temp file, fsynced and renamed, and the index is written
(atomically) last: an index is the mark of a finished build, and its byte count must match,
so a killed build is never trusted. A lock file serialises builders of one stem (the
processes of a multi-device run build once). Loader workers open the memory map lazily, read
only, each their own; the operating system's page cache shares the pixels between them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from fgvc import runs
from fgvc.data.base import FineGrainedDataset, read_rgb
from fgvc.errors import UserError

VERSION = 1  # bump when the file layout or what the fixed steps mean changes
MODES = ("off", "auto", "on")
FIXED_STEPS = (v2.ToImage, v2.Resize, v2.CenterCrop)  # draw no random numbers: safe to run once, ahead
_SAMPLES_FOR_ESTIMATE = 16


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fgvc/images`` (``~/.cache/fgvc/images``).

    Not inside the dataset root: roots are often read-only or shared, and a folder there could
    be read as a class (the ``folder`` layout) or copied with the data.
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fgvc" / "images"


def split_pipeline(transform) -> tuple[list, list] | None:
    """``(fixed steps, the rest)`` of an fgvc pipeline, or None when it cannot be cached (not a
    ``v2.Compose`` starting with ``v2.ToImage``: its steps may expect a PIL image)."""
    steps = list(getattr(transform, "transforms", []))
    if not isinstance(transform, v2.Compose) or not steps or not isinstance(steps[0], v2.ToImage):
        return None
    n = 0
    while n < len(steps) and type(steps[n]) in FIXED_STEPS:
        n += 1
    return steps[:n], steps[n:]


def _min_side(dataset: FineGrainedDataset) -> int | None:
    # the rule of FineGrainedDataset.__getitem__: the dataset's own, else the transform's
    side = dataset.decode_min_side
    return side if side is not None else getattr(dataset.transform, "decode_min_side", None)


def _fixed_pixels(path: Path, min_side: int | None, fixed: v2.Compose) -> np.ndarray:
    """One image through ``read_rgb`` and the fixed steps: (H, W, 3) uint8."""
    image = fixed(read_rgb(path, min_side))
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"the fixed steps made a {tuple(image.shape)} {image.dtype} tensor, not (3, H, W) uint8")
    return image.permute(1, 2, 0).contiguous().numpy()


@dataclass(frozen=True)
class CacheKey:
    stem: str  # file name without suffix: <name>-<split>-<side>px-<what>-<stamps>
    what: str  # digest of the pipeline's fixed steps, decode side and paths
    stamps: str  # digest of every file's size and mtime


def cache_key(dataset: FineGrainedDataset, fixed: list) -> CacheKey:
    """The key of ``dataset``'s cache: dataset, split, fixed steps, decode side and source files."""
    side = _min_side(dataset)
    what = hashlib.sha256(json.dumps(
        [VERSION, dataset.name, dataset.split, [repr(t) for t in fixed], side,
         [str(Path(s.path).resolve()) for s in dataset.samples]]).encode()).hexdigest()[:16]
    stamps = hashlib.sha256()
    for s in dataset.samples:
        try:
            st = os.stat(s.path)
        except OSError:
            raise UserError(f"image {s.path} does not exist; check the dataset root") from None
        stamps.update(f"{st.st_size},{st.st_mtime_ns};".encode())
    name = re.sub(r"[^A-Za-z0-9_.+]+", "_", dataset.name or "data")
    tag = f"{name}-{dataset.split or 'split'}-{side or 'full'}px-{what}"
    digest = stamps.hexdigest()[:16]
    return CacheKey(f"{tag}-{digest}", what, digest)


class ImageCache:
    """Cached pixels of one split: ``cache[i]`` is image i as an (H, W, 3) uint8 array, read-only.

    The memory map opens on first access in each process: a worker started by fork inherits its
    parent's map, one started by spawn gets the cache pickled without it and maps the file itself;
    either way the pixels are shared through the page cache, never copied per worker.
    """

    def __init__(self, data_path: Path, offsets: np.ndarray, shapes: np.ndarray, nbytes: int):
        self.data_path, self.offsets, self.shapes, self.nbytes = Path(data_path), offsets, shapes, nbytes
        self._pixels: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def open(self) -> np.memmap:
        """The pixels, mapped read-only (once per process)."""
        if self._pixels is None:
            self._pixels = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=(self.nbytes,))
        return self._pixels

    def __getitem__(self, index: int) -> np.ndarray:
        h, w = (int(v) for v in self.shapes[index])
        start = int(self.offsets[index])
        return self.open()[start:start + h * w * 3].reshape(h, w, 3)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}


def open_cache(folder: Path, key: CacheKey, n: int) -> ImageCache | None:
    """The finished cache for ``key``, or None: no index, another key or version, or pixels that
    are not all there (a build killed between its two renames, a truncated file)."""
    index_path, data_path = folder / f"{key.stem}.json", folder / f"{key.stem}.u8"
    try:
        index = json.loads(index_path.read_text())
        if (index.get("version") != VERSION or index.get("what") != key.what or index.get("stamps") != key.stamps
                or len(index["offsets"]) != n or data_path.stat().st_size != index["nbytes"]):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ImageCache(data_path, np.asarray(index["offsets"], dtype=np.int64),
                      np.asarray(index["shapes"], dtype=np.int64).reshape(-1, 2), int(index["nbytes"]))


class _FixedSteps(Dataset):
    def __init__(self, paths: list[Path], min_side: int | None, fixed: v2.Compose):
        self.paths, self.min_side, self.fixed = paths, min_side, fixed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return _fixed_pixels(self.paths[index], self.min_side, self.fixed)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (fcntl.flock; no lock where fcntl is missing, e.g. Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def build_cache(dataset: FineGrainedDataset, folder: Path, key: CacheKey, fixed: list, workers: int = 0,
                progress: bool = True) -> ImageCache:
    """Decode every image of ``dataset`` through its fixed steps into ``folder`` (see the module
    docstring for the files and why a killed build is never trusted); raises UnreadableImage naming
    the first image that cannot be decoded, leaving nothing behind."""
    data_path = folder / f"{key.stem}.u8"
    steps = v2.Compose(fixed)
    loader = DataLoader(_FixedSteps([s.path for s in dataset.samples], _min_side(dataset), steps),
                        batch_size=None, num_workers=workers)
    offsets, shapes, size = [], [], 0
    fd, tmp = tempfile.mkstemp(prefix=f".{data_path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            bar = tqdm(loader, total=len(dataset), desc=f"caching {dataset.name} {dataset.split}", unit="img",
                       disable=not progress, leave=False)
            for pixels in bar:
                pixels = np.asarray(pixels)
                offsets.append(size)
                shapes.append(pixels.shape[:2])
                f.write(pixels.tobytes())
                size += pixels.nbytes
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, data_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    runs.write_json_atomic(folder / f"{key.stem}.json", {
        "version": VERSION, "what": key.what, "stamps": key.stamps, "dataset": dataset.name,
        "split": dataset.split, "fixed_steps": [repr(t) for t in fixed], "decode_min_side": _min_side(dataset),
        "nbytes": size, "offsets": offsets, "shapes": [list(s) for s in shapes]})
    return ImageCache(data_path, np.asarray(offsets, dtype=np.int64),
                      np.asarray(shapes, dtype=np.int64).reshape(-1, 2), size)


def _remove_stale(folder: Path, key: CacheKey) -> None:
    """Caches of the same images in an older state (a file changed since) and temp files that killed
    builds of them left; run under the key's lock."""
    tag = key.stem[:-len(key.stamps)]
    for p in folder.iterdir():
        older = p.name.lstrip(".").startswith(tag) and not p.name.startswith(key.stem)
        if older or p.name.startswith(f".{key.stem}."):
            with contextlib.suppress(OSError):
                p.unlink()


class CachedDataset(FineGrainedDataset):
    """A ``FineGrainedDataset`` whose images come from an ``ImageCache``: ``dataset[i]`` is the rest
    of the pipeline run on the cached pixels, equal to the uncached item. With ``return_boxes``
    (boxes live in source pixels) items are decoded from the files as before."""

    def __init__(self, dataset: FineGrainedDataset, cache: ImageCache, rest: list):
        self.__dict__.update(dataset.__dict__)
        self.cache, self.rest = cache, v2.Compose(rest) if rest else None  # None: the cache holds the whole output
        cache.open()  # mapped now: a later build that removes this (stale) file cannot pull it away

    def __getitem__(self, index: int):
        if self.return_boxes:
            return super().__getitem__(index)
        # the layout ToImage gives a PIL image (an HWC buffer seen as CHW), so every later step runs as uncached
        image = tv_tensors.Image(torch.from_numpy(np.array(self.cache[index])).permute(2, 0, 1))
        return (self.rest(image) if self.rest else image), self.samples[index].label


def estimate_bytes(dataset: FineGrainedDataset, fixed: list) -> int:
    """The cache's size in bytes, from up to 16 images spread over the split (exact when the fixed
    steps end in a crop: every image then has the same shape)."""
    n = len(dataset)
    if n == 0:
        return 0
    picks = sorted({round(i * (n - 1) / max(1, _SAMPLES_FOR_ESTIMATE - 1)) for i in range(_SAMPLES_FOR_ESTIMATE)})
    steps, side = v2.Compose(fixed), _min_side(dataset)
    sizes = [_fixed_pixels(dataset.samples[i].path, side, steps).nbytes for i in picks]
    return round(sum(sizes) / len(sizes) * n)


def cached(dataset: FineGrainedDataset, folder: str | Path | None = None, workers: int = 0,
           progress: bool = True) -> CachedDataset:
    """``dataset`` reading its pixels from the cache in ``folder`` (default ``default_cache_dir()``),
    built first when there is none for these images and pipeline. Set ``decode_min_side`` and drop
    unreadable samples before: the cache is of the samples and decode side as they are now."""
    parts = split_pipeline(dataset.transform)
    if parts is None:
        raise UserError(f"the {dataset.split} transform of {dataset.name} is not an fgvc pipeline starting with "
                        "v2.ToImage, so its images cannot be cached; set data.cache=off")
    fixed, rest = parts
    folder = Path(folder).expanduser() if folder else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the image cache folder {folder} ({e.strerror}); set data.cache_dir to a "
                        "writable folder or data.cache=off") from None
    key = cache_key(dataset, fixed)
    cache = open_cache(folder, key, len(dataset))
    if cache is None:
        with _locked(folder / f"{key.stem}.lock"):
            cache = open_cache(folder, key, len(dataset))  # another process may have built it meanwhile
            if cache is None:
                _remove_stale(folder, key)
                cache = build_cache(dataset, folder, key, fixed, workers, progress)
    return CachedDataset(dataset, cache, rest)


def cache_datasets(datasets: list[FineGrainedDataset], mode: str, budget_gb: float, folder: str | Path | None,
                   workers: int = 0, progress: bool = True, log=print) -> list[FineGrainedDataset]:
    """``datasets`` with their images cached as ``data.cache`` says: ``off`` leaves them, ``on`` caches
    every one, ``auto`` caches them in order while the estimated sizes fit in ``budget_gb`` (GiB; a
    cache already on disk counts too) and the disk has room, and says which it left out."""
    if mode not in MODES:
        raise UserError(f"data.cache={mode!r} is not one of {', '.join(MODES)}")
    if mode == "off":
        return list(datasets)
    folder = Path(folder).expanduser() if folder else default_cache_dir()
    left, out = budget_gb * 2**30, []
    for ds in datasets:
        parts = split_pipeline(ds.transform)
        if len(ds) == 0 or (parts is None and mode == "auto"):
            out.append(ds)
            continue
        if parts is None:
            out.append(cached(ds, folder, workers, progress))  # raises the sentence
            continue
        existing = open_cache(folder, cache_key(ds, parts[0]), len(ds)) if folder.is_dir() else None
        need = existing.nbytes if existing else estimate_bytes(ds, parts[0])
        free = float("inf") if existing else _free_bytes(folder)
        if mode == "auto" and (need > left or need > free):
            why = (f"over the {left / 2**30:.2f} GiB left of data.cache_budget_gb={budget_gb:g}" if need > left
                   else f"more than the {free / 2**30:.2f} GiB free in {folder}")
            log(f"data.cache=auto: caching the {ds.split} images would take {need / 2**30:.2f} GiB, {why}; "
                "they are read from the image files")
            out.append(ds)
            continue
        if need > free:
            room = (f"has {free / 2**30:.2f} GiB free" if free > 0 else
                    "has no room for files (not a writable folder on a disk)")
            size = f"{need / 2**30:.2f} GiB" if need >= 2**30 else f"{need / 2**20:.1f} MiB"
            raise UserError(f"data.cache=on needs about {size} for the {ds.split} images and {folder} {room}; "
                            "set data.cache_dir elsewhere or data.cache=auto")
        left -= need
        out.append(cached(ds, folder, workers, progress))
    return out


def _free_bytes(folder: Path) -> float:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return float("inf")


WAIT_HINT_SHARE = 0.10  # of an epoch spent waiting for batches, above which a CPU run is told about the cache


def wait_hint(mode: str, device_type: str, waited: float, seconds: float, processes: int = 1) -> str | None:
    """The sentence a one-process CPU run with ``data.cache=off`` prints when its first epoch spent
    ``WAIT_HINT_SHARE`` or more of its ``seconds`` waiting for batches (``waited``, the first batch's wait
    left out: it starts the loader's workers), else None. On a CPU the loader decodes and resizes on the
    cores the steps use, so that share is what the cache gives back (benchmarks/results/loop_vs_bare.md:
    11% of each epoch for resnet18 at 64 px on birds50, 0.81 of the bare step, 1.005 with the cache). On an
    accelerator the host's wait overlaps the device's work, and with several ``processes`` each batch also
    waits for the slowest one, so nothing is printed there. ``data.cache=auto`` that cached no training
    images (over its budget) is not told either."""
    if mode != "off" or device_type != "cpu" or processes > 1 or seconds <= 0 or waited / seconds < WAIT_HINT_SHARE:
        return None
    return (f"the first epoch waited {waited / seconds:.0%} of its {seconds:.0f} s for images to be decoded on the "
            "cores the steps use; data.cache=auto decodes each image once and keeps its pixels on disk (the same "
            "batches, bit for bit; docs/data.md)")
