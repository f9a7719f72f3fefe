"""FGVC-Aircraft 2013b (Maji et al. 2013, arXiv:1306.5151) in the official layout.

``fgvc-aircraft-2013b/data/`` holds ``images/<id>.jpg``, the class names (``variants.txt``,
``families.txt``, ``manufacturers.txt``: one per line, in label order), the image lists
``images_<level>_<split>.txt`` (lines ``<id> <name with spaces>``) and, optionally,
``images_box.txt`` (lines ``<id> <xmin> <ymin> <xmax> <ymax>``, 1-based inclusive pixels,
converted by ``pixel_corners_to_box``). The benchmark level is the 100 variants (dataset
``aircraft``); ``aircraft_family`` (70) and ``aircraft_manufacturer`` (30) read the other levels.

Splits: papers train on the official ``trainval`` list and report the official ``test``;
fgvc's ``test`` is that test list, and ``val`` is carved from ``trainval`` like every other
loader (``val_fraction`` of each class, stratified, seeded), ``train`` the rest (fgvc train
keeps a val split for model selection, so it trains on 1 - val_fraction of the papers' images).
The official train/val halves are not used. The images keep their 20 px copyright banner at the bottom.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from fgvc.data.base import (
    FineGrainedDataset,
    Sample,
    check_classes_have_images,
    find_folder,
    pixel_corners_to_box,
    split_dataset,
)
from fgvc.data.cub import read_rows
from fgvc.errors import UserError

FOLDER = "fgvc-aircraft-2013b"  # what the official archive extracts to
LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
HOW_TO_GET = "run `fgvc data prepare aircraft --root DIR`"
_ID = re.compile(r"^[0-9A-Za-z_-]+$")  # official ids are 7 digits; nothing that could leave images/


def find_base(root: Path) -> Path:
    """The ``data/`` folder: ``root``, ``root/data`` or ``root/fgvc-aircraft-2013b/data``."""
    return find_folder(root, (f"{FOLDER}/data", "data", "."), "variants.txt", "aircraft",
                       f"the folder holding {FOLDER}/ (or its data/ folder) with variants.txt and images/",
                       HOW_TO_GET)


def _names(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path} is missing; the FGVC-Aircraft layout lists one class name per line there: "
                        f"extract the archive again or {HOW_TO_GET}")
    names = [line.strip() for _, (line,) in read_rows(path, "<class name>", 1, text_last=True)]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{path} lists class {dup!r} twice; list each class once")
    return names


def _list(path: Path, index: dict[str, int], names_path: Path) -> dict[str, tuple[int, int]]:
    """{image id: (label, line number)} of one ``images_<level>_<split>.txt``."""
    if not path.is_file():
        raise UserError(f"{path} is missing; the FGVC-Aircraft layout needs it: extract the archive again or "
                        f"{HOW_TO_GET}")
    expected = "<image_id> <class name>"
    out: dict[str, tuple[int, int]] = {}
    for n, (image_id, name) in read_rows(path, expected, 2, text_last=True):
        if not _ID.match(image_id):
            raise UserError(f"{path} line {n}: image id {image_id!r} must be letters, digits, '-' or '_'")
        if name not in index:
            raise UserError(f"{path} line {n}: class {name!r} is not in {names_path}")
        if image_id in out:
            raise UserError(f"{path} line {n}: image {image_id} already appears on line {out[image_id][1]}; "
                            "list each image once")
        out[image_id] = (index[name], n)
    return out


def _boxes(path: Path) -> dict[str, tuple[float, float, float, float]] | None:
    if not path.is_file():
        return None
    expected = "<image_id> <xmin> <ymin> <xmax> <ymax>"
    out = {}
    for n, (image_id, *corners) in read_rows(path, expected, 5):
        try:
            out[image_id] = pixel_corners_to_box(*(float(v) for v in corners))
        except ValueError:
            raise UserError(f"{path} line {n}: expected '{expected}' in 1-based pixels with xmin <= xmax and "
                            f"ymin <= ymax, got {' '.join(corners)!r}") from None
    return out


def read_all(root: Path, level: str = "variant") -> tuple[list[Sample], list[Sample], list[str], Path]:
    """(official trainval samples, official test samples, class names of ``level``, data folder), all checked."""
    base = find_base(root)
    names_path = base / LEVELS[level]
    names = _names(names_path)
    index = {name: i for i, name in enumerate(names)}
    p_trainval, p_test = (base / f"images_{level}_{s}.txt" for s in ("trainval", "test"))
    trainval, test = _list(p_trainval, index, names_path), _list(p_test, index, names_path)
    both = sorted(set(trainval) & set(test))
    if both:
        raise UserError(f"image {both[0]} is in both {p_trainval.name} (line {trainval[both[0]][1]}) and "
                        f"{p_test.name} (line {test[both[0]][1]}); an image belongs to one split")
    p_box = base / "images_box.txt"
    boxes = _boxes(p_box)
    if boxes is not None:
        missing = sorted((set(trainval) | set(test)) - set(boxes))
        if missing:
            raise UserError(f"image {missing[0]} has no line in {p_box}; every image needs a box there "
                            "(or remove the file to load without boxes)")
    images = base / "images"
    if not images.is_dir():
        raise UserError(f"{images} is missing; the FGVC-Aircraft layout keeps the image files there: "
                        f"extract the archive again or {HOW_TO_GET}")

    def samples(table: dict[str, tuple[int, int]]) -> list[Sample]:
        return [Sample(images / f"{i}.jpg", label, boxes[i] if boxes is not None else None,
                       image_id=int(i) if i.isdigit() else None) for i, (label, _) in table.items()]

    train = samples(trainval)
    check_classes_have_images(train, names, p_trainval, "trainval")
    return train, samples(test), names, base


def load(root, split: str, transform=None, *, val_fraction: float = 0.1, seed: int = 0,
         level: str = "variant") -> FineGrainedDataset:
    """Split 'train' (official trainval minus val), 'val' (``val_fraction`` of each class of trainval,
    seeded) or 'test' (official test) of FGVC-Aircraft under ``root``, labelled at ``level``
    ('variant', 'family' or 'manufacturer')."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    train, test, names, base = read_all(Path(root), level)
    name = "aircraft" if level == "variant" else f"aircraft_{level}"
    return split_dataset(train, test, names, base, split, transform, val_fraction=val_fraction, seed=seed,
                         name=name, how_to_get=f"extract the archive again or {HOW_TO_GET}")


load_family = partial(load, level="family")
load_manufacturer = partial(load, level="manufacturer")

__all__ = ["load", "load_family", "load_manufacturer", "read_all"]
