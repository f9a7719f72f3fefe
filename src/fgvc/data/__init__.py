"""Datasets by name. Each loader: (root, split, transform, val_fraction, seed) -> FineGrainedDataset."""

from __future__ import annotations

import difflib
from pathlib import Path

from fgvc.data import cub, dogs, folder, synthetic
from fgvc.data.base import FineGrainedDataset, Sample, read_rgb, readable_name
from fgvc.errors import UserError

DATASETS = {
    "cub200": cub.load,
    "dogs": dogs.load,
    "folder": folder.load,
    "synthbirds": cub.load,  # synthbirds is written in the official CUB layout
    "synthdogs": dogs.load,  # ... or in the Stanford Dogs layout
}


def build_dataset(name: str, root: str | Path, split: str, transform=None,
                  val_fraction: float = 0.1, seed: int = 0) -> FineGrainedDataset:
    """The ``split`` ('train', 'val' or 'test') of dataset ``name`` found under ``root``."""
    try:
        load = DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown dataset {name!r}{hint}; choose one of {', '.join(DATASETS)}") from None
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"dataset root {root} does not exist; run `fgvc data prepare` or `fgvc data synth --root {root}`")
    return load(root, split, transform, val_fraction=val_fraction, seed=seed)


__all__ = ["DATASETS", "FineGrainedDataset", "Sample", "build_dataset", "read_rgb", "readable_name", "synthetic"]
