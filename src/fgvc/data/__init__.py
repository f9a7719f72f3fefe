"""Datasets by name. Each loader: (root, split, transform, val_fraction, seed) -> FineGrainedDataset."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from fgvc.data import aircraft, cars, cub, dogs, flowers, folder, nabirds, synthetic
from fgvc.data.base import FineGrainedDataset, Sample, read_rgb, readable_name
from fgvc.data.subset import parse_classes, select_classes
from fgvc.errors import UserError

DATASETS = {
    "cub200": cub.load,
    "dogs": dogs.load,
    "folder": folder.load,
    "synthbirds": cub.load,  # synthbirds is written in the official CUB layout
    "synthdogs": dogs.load,  # ... or in the Stanford Dogs layout
    "aircraft": aircraft.load,  # FGVC-Aircraft, 100 variants (the benchmark level)
    "aircraft_family": aircraft.load_family,  # ... 70 families
    "aircraft_manufacturer": aircraft.load_manufacturer,  # ... 30 manufacturers
    "cars": cars.load,  # Stanford Cars, 196 classes
    "nabirds": nabirds.load,  # NABirds, 555 leaf classes
    "flowers102": flowers.load,  # Oxford Flowers-102
}


def how_to_get(name: str, root: str | Path) -> str:
    """How a user gets dataset ``name`` into ``root``: its own `fgvc data prepare` or `fgvc data synth` line, or
    what to put there; the advice of each dataset, never another's (no `data synth` for a real dataset)."""
    if name in ("synthbirds", "synthdogs"):
        layout = " --layout dogs" if name == "synthdogs" else ""
        return f"`fgvc data synth{layout} --root {root}` generates it"
    if name == "folder":
        return f"data.root must be a folder with one folder per class (or train/ and test/ holding them): {root}"
    prepared = {"cub200": "cub200", "dogs": "dogs", "flowers102": "flowers102", "cars": "cars", "nabirds": "nabirds",
                "aircraft": "aircraft", "aircraft_family": "aircraft", "aircraft_manufacturer": "aircraft"}
    line = f"`fgvc data prepare {prepared.get(name, name)} --root {root}` gets it"
    if name == "cub200":  # birds50, the CUB subset the birds50_* recipes and studies read, is made from CUB
        line += f" (the 50-species subset the birds50 recipes read: `fgvc data birds50 --cub CUB_DIR --out {root}`)"
    return line + " (docs/data.md)"


def resolve_num_workers(num_workers: int, cuda: bool) -> int:
    """``data.num_workers=-1`` (auto): with a GPU, up to 8 decoding workers; on a CPU, none
    unless there are more than 4 cores, since workers then compete with the model's own
    threads (measured in benchmarks/results/loop_overhead.md)."""
    if num_workers >= 0:
        return num_workers
    cpus = os.cpu_count() or 1
    if cuda:
        return max(1, min(8, cpus - 1))
    return 0 if cpus <= 4 else cpus // 4


def build_dataset(name: str, root: str | Path, split: str, transform=None,
                  val_fraction: float = 0.1, seed: int = 0, classes: str | list[int] = "") -> FineGrainedDataset:
    """The ``split`` ('train', 'val' or 'test') of dataset ``name`` found under ``root``; ``classes``
    (``data.classes``: "" for all, first-half, second-half, "0-24", or a list of indices) keeps only
    those classes, renumbered 0..k-1 (fgvc.data.subset); a bad or out-of-range list raises UserError."""
    try:
        load = DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown dataset {name!r}{hint}; choose one of {', '.join(DATASETS)}") from None
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"dataset root {root} does not exist; {how_to_get(name, root)}")
    dataset = load(root, split, transform, val_fraction=val_fraction, seed=seed)
    if hasattr(dataset, "name"):  # the registry name: synthbirds is read by CUB's loader, but is not cub200
        dataset.name = name
    if classes:
        dataset = select_classes(dataset, parse_classes(classes, len(dataset.class_names)))
    return dataset


def config_split(cfg, split: str, transform=None) -> FineGrainedDataset:
    """``build_dataset`` with every data key of ``cfg`` (a fgvc.config.Config): data.name, data.root,
    data.val_fraction, data.classes and train.seed (the val draw): the ``split`` a run with ``cfg`` uses."""
    d = cfg.data
    return build_dataset(d.name, d.root, split, transform, d.val_fraction, cfg.train.seed, classes=d.classes)


__all__ = ["DATASETS", "config_split", "how_to_get", "resolve_num_workers", "FineGrainedDataset", "Sample", "build_dataset", "read_rgb", "readable_name", "synthetic"]
