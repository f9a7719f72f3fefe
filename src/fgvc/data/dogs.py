"""Stanford Dogs (and synthdogs) in the official layout.

``lists/train_list.mat`` and ``lists/test_list.mat`` (keys ``file_list``,
``annotation_list``, ``labels`` 1-based) name the images under ``Images/``; boxes come
from the PASCAL-VOC style XML files under ``Annotation/`` when present (every object's
``bndbox``: the first is ``Sample.box``, the others ``Sample.more_boxes``, so an image of
two dogs keeps both; a missing file gives box None). Class names are the image folder names
(``n02085620-Chihuahua``); ``readable_name`` turns one into ``Chihuahua``. Validation is
carved from the official train list, stratified and seeded; test is the official test list.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from fgvc.data.base import (
    LAYOUT_HINT,
    FineGrainedDataset,
    Sample,
    check_classes_have_images,
    check_split,
    detect_layout,
    readable_name,
    split_dataset,
)
from fgvc.errors import UserError

FOLDER = "StanfordDogs"  # where `fgvc data prepare dogs --root DIR` puts the dataset inside DIR
KEYS = ("file_list", "annotation_list", "labels")
HOW_TO_GET = "run `fgvc data prepare dogs --root DIR` or `fgvc data synth --layout dogs --root DIR`"


def find_base(root: Path) -> Path:
    """The folder holding ``Images/`` and the lists: ``root`` or ``root/StanfordDogs``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist or is not a folder; {HOW_TO_GET}")
    for base in (root, root / FOLDER):
        if (base / "Images").is_dir() and _list_path(base, "train"):
            return base
    for base in (root, root / FOLDER):
        if (base / "Images").is_dir():
            raise UserError(f"{base} has Images/ but no lists/train_list.mat; extract lists.tar into "
                            f"{base / 'lists'} or {HOW_TO_GET}")
        if _list_path(base, "train"):
            raise UserError(f"{base} has the .mat lists but no Images/ folder; extract images.tar there or {HOW_TO_GET}")
    if root.name == "Images" and _list_path(root.parent, "train"):
        raise UserError(f"{root} is the Images/ folder of a Stanford Dogs dataset; pass its parent {root.parent}")
    layout = detect_layout(root)
    hint = f"; {LAYOUT_HINT[layout]}" if layout and layout != "dogs" else f"; {HOW_TO_GET}"
    raise UserError(f"{root} holds no Images/ and lists/train_list.mat: expected the Stanford Dogs "
                    f"folder (or a folder holding {FOLDER}/){hint}")


def _list_path(base: Path, split: str) -> Path | None:
    # official lists.tar extracts the .mat files flat; `prepare` puts them in lists/
    for p in (base / "lists" / f"{split}_list.mat", base / f"{split}_list.mat"):
        if p.is_file():
            return p
    return None


def _strings(path: Path, key: str, value) -> list[str]:
    """A MATLAB cell column of strings, as scipy loads it, to a list of str."""
    arr = np.asarray(value, dtype=object).reshape(-1)
    out = []
    for i, cell in enumerate(arr):
        c = np.asarray(cell).reshape(-1)
        if c.size != 1 or not isinstance(c[0], str) or not c[0]:
            raise UserError(f"{path}: entry {i + 1} of '{key}' is not a non-empty string; expected a cell "
                            "column of relative paths like the official lists")
        out.append(c[0].replace("\\", "/"))
    return out


def read_list(path: Path) -> list[tuple[str, str, int]]:
    """(image relpath, annotation relpath, 1-based label) rows of one official .mat list."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises several types for a non-MAT file
        raise UserError(f"{path} cannot be read as a MATLAB .mat file ({e.__class__.__name__}: {e}); "
                        "download lists.tar again") from None
    missing = [k for k in KEYS if k not in mat]
    if missing:
        raise UserError(f"{path} has no key {missing[0]!r}; expected keys {', '.join(KEYS)} "
                        f"(found {', '.join(k for k in mat if not k.startswith('__')) or 'none'})")
    files = _strings(path, "file_list", mat["file_list"])
    annos = _strings(path, "annotation_list", mat["annotation_list"])
    labels = np.asarray(mat["labels"]).reshape(-1)
    if not (len(files) == len(annos) == len(labels)):
        raise UserError(f"{path}: file_list, annotation_list and labels have {len(files)}, {len(annos)} "
                        f"and {len(labels)} entries; they must have one entry per image")
    rows = []
    for i, (f, a, lab) in enumerate(zip(files, annos, labels)):
        cell = np.asarray(lab).reshape(-1)
        # a real number only: not text, a nested cell or a complex number (whose float() drops a part)
        value = float(cell[0]) if cell.size == 1 and cell.dtype.kind in "buif" else math.nan
        if not (math.isfinite(value) and value == int(value) and value >= 1):
            raise UserError(f"{path}: label {_show(lab)} of entry {i + 1} ({f}) is not a 1-based class number")
        for rel in (f, a):
            parts = PurePosixPath(rel).parts
            if rel.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
                raise UserError(f"{path}: entry {i + 1} path {rel!r} must be relative to the dataset folder, "
                                "without '..'")
        rows.append((f, a, int(value)))
    return rows


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_box(path: Path) -> tuple[float, float, float, float] | None:
    """(x, y, w, h) in px of the first object's bndbox in a VOC XML file; None when the file is absent."""
    boxes = read_boxes(path)
    return boxes[0] if boxes else None


def read_boxes(path: Path) -> list[tuple[float, float, float, float]]:
    """(x, y, w, h) in px of every object's bndbox in a VOC XML file, in file order; [] when the file is absent."""
    if not path.is_file():
        return []
    try:
        found = ET.parse(path).getroot().findall("object/bndbox")
        corners = [tuple(float(bb.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")) for bb in found]
    except (ET.ParseError, ValueError) as e:
        raise UserError(f"annotation {path} is not valid VOC XML ({e}); expected "
                        "<object><bndbox><xmin>...</xmin>...</bndbox></object>") from None
    boxes = []
    for i, (x0, y0, x1, y1) in enumerate(corners):
        if not (math.inf > x1 > x0 >= 0 and math.inf > y1 > y0 >= 0):  # also false for nan
            which = f"object {i + 1}'s " if len(corners) > 1 else ""
            raise UserError(f"annotation {path}: {which}bndbox ({x0}, {y0}, {x1}, {y1}) is not a box with "
                            "0 <= xmin < xmax and 0 <= ymin < ymax")
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


def _samples(base: Path, path: Path, rows, folder_of: dict[int, str]) -> list[Sample]:
    annotations = base / "Annotation"
    samples = []
    for i, (f, a, lab) in enumerate(rows):
        folder = f.split("/")[0] if "/" in f else ""
        if not folder:
            raise UserError(f"{path}: entry {i + 1} {f!r} is not '<class folder>/<file>'")
        known = folder_of.setdefault(lab, folder)
        if known != folder:
            raise UserError(f"{path}: entry {i + 1} puts label {lab} on folder {folder!r}, but label {lab} is "
                            f"also used for {known!r}; one label must mean one class folder")
        boxes = read_boxes(annotations / a) if annotations.is_dir() else []
        samples.append(Sample(base / "Images" / f, lab, boxes[0] if boxes else None, more_boxes=tuple(boxes[1:])))
    return samples


def read_all(root: Path) -> tuple[list[Sample], list[Sample], list[str], Path]:
    """(official train samples, official test samples, class names, dataset folder), all checked."""
    base = find_base(root)
    p_train = _list_path(base, "train")
    p_test = _list_path(base, "test")
    if p_test is None:
        raise UserError(f"{base / 'lists' / 'test_list.mat'} is missing; extract lists.tar again or {HOW_TO_GET}")
    folder_of: dict[int, str] = {}
    train = _samples(base, p_train, read_list(p_train), folder_of)
    test = _samples(base, p_test, read_list(p_test), folder_of)
    listed: dict[Path, str] = {}
    for s, where in [(s, p_train.name) for s in train] + [(s, p_test.name) for s in test]:
        if s.path in listed:  # one file listed twice would be counted twice, or leak from train into test
            raise UserError(f"image {s.path} is listed twice (in {listed[s.path]} and {where}); "
                            "list each image once")
        listed[s.path] = where
    n = max(folder_of)
    gaps = [k for k in range(1, n + 1) if k not in folder_of]
    if gaps:
        raise UserError(f"label {gaps[0]} is used by no image in {p_train.name} or {p_test.name}, but labels "
                        f"go up to {n}; labels must be 1..number of classes")
    names = [folder_of[k] for k in range(1, n + 1)]
    if len(set(names)) != len(names):
        raise UserError(f"{p_train}: two labels share one class folder; one folder must mean one label")
    # labels in the lists are 1-based
    train = [replace(s, label=s.label - 1) for s in train]
    test = [replace(s, label=s.label - 1) for s in test]
    check_classes_have_images(train, names, p_train, "train")
    return train, test, names, base


def load(root, split: str, transform=None, *, val_fraction: float = 0.1, seed: int = 0) -> FineGrainedDataset:
    """Split 'train' (official train minus val), 'val' (``val_fraction`` of each class of official
    train, seeded) or 'test' (official test) of the Stanford-Dogs-layout dataset under ``root``."""
    check_split(split)
    train, test, names, base = read_all(Path(root))
    return split_dataset(train, test, names, base, split, transform, val_fraction=val_fraction, seed=seed,
                         name="dogs", how_to_get=f"extract images.tar again or {HOW_TO_GET}")


__all__ = ["load", "read_all", "read_box", "read_boxes", "read_list", "readable_name"]
