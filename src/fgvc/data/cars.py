"""Stanford Cars (Krause et al. 2013, "3D Object Representations for Fine-Grained Categorization").

The devkit layout: ``devkit/cars_meta.mat`` (``class_names``, 196 in label order),
``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat`` (found in the dataset
folder or in ``devkit/``), each a struct array ``annotations`` with ``bbox_x1``, ``bbox_y1``,
``bbox_x2``, ``bbox_y2`` (1-based inclusive pixel corners, converted by ``pixel_corners_to_box``),
``class`` (1-based) and ``fname``; the images are ``cars_train/<fname>`` and ``cars_test/<fname>``.
The devkit's own ``cars_test_annos.mat`` has no labels, so it is not enough. The dataset folder
is ``root`` or ``root/stanford_cars`` (torchvision's name). The official download site is gone,
so there is no ``prepare``. Test is the official test set; val is carved from the official train
set, stratified and seeded; train is the rest.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import numpy as np

from fgvc.data.base import (
    FineGrainedDataset,
    Sample,
    check_classes_have_images,
    find_folder,
    load_mat,
    mat_entry,
    pixel_corners_to_box,
    split_dataset,
)
from fgvc.errors import UserError

FOLDER = "stanford_cars"
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
TEST_LABELS = "cars_test_annos_withlabels.mat"
HOW_TO_GET = (f"put devkit/, cars_train/, cars_test/ and {TEST_LABELS} in DIR/{FOLDER} "
              "(Stanford Cars has no official download any more)")


def find_base(root: Path) -> Path:
    """The folder holding ``devkit/cars_meta.mat``: ``root`` or ``root/stanford_cars``."""
    return find_folder(root, (".", FOLDER), "devkit/cars_meta.mat", "cars",
                       "the Stanford Cars folder with devkit/, cars_train/ and cars_test/ "
                       f"(or a folder holding {FOLDER}/)", HOW_TO_GET)


def _loadmat(path: Path, key: str) -> np.ndarray:
    mat = load_mat(path, f"get the file again: {HOW_TO_GET}", squeeze_me=True)
    return np.atleast_1d(mat_entry(path, mat, key, "the Stanford Cars devkit file"))


def read_class_names(path: Path) -> list[str]:
    """``class_names`` of ``cars_meta.mat``, in label order."""
    names = [str(n).strip() for n in _loadmat(path, "class_names").reshape(-1)]
    if not names or not all(names):
        raise UserError(f"{path}: class_names must be a non-empty list of non-empty names")
    return names


def read_annotations(path: Path, num_classes: int, images: Path) -> list[Sample]:
    """The samples of one ``annotations`` struct array; ``images`` is the folder ``fname`` is relative to."""
    annos = _loadmat(path, "annotations")
    missing = [f for f in FIELDS if annos.dtype.names is None or f not in annos.dtype.names]
    if missing:
        extra = " (the devkit's cars_test_annos.mat has no labels: use cars_test_annos_withlabels.mat)" \
            if missing == ["class"] else ""
        raise UserError(f"{path}: the annotations have no field {missing[0]!r}; expected fields "
                        f"{', '.join(FIELDS)}{extra}")
    samples, seen = [], {}
    for i, a in enumerate(annos.reshape(-1), start=1):
        fname = str(a["fname"]).strip().replace("\\", "/")
        parts = PurePosixPath(fname).parts
        if not fname or fname.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
            raise UserError(f"{path}: annotation {i} has file name {fname!r}; expected a file in {images.name}/")
        if fname in seen:
            raise UserError(f"{path}: annotations {seen[fname]} and {i} both name {fname}; list each image once")
        seen[fname] = i
        try:
            label = float(a["class"])
            corners = [float(a[k]) for k in FIELDS[:4]]
        except (TypeError, ValueError):
            label, corners = math.nan, []
        if not (math.isfinite(label) and label == int(label) and 1 <= label <= num_classes):
            raise UserError(f"{path}: annotation {i} ({fname}) has class {a['class']!r}; expected a number "
                            f"from 1 to {num_classes} (cars_meta.mat's class count)")
        try:
            box = pixel_corners_to_box(*corners)
        except (TypeError, ValueError):
            raise UserError(f"{path}: annotation {i} ({fname}) has box corners {corners or 'that are not numbers'}; "
                            "expected 1-based bbox_x1 <= bbox_x2 and bbox_y1 <= bbox_y2") from None
        stem = PurePosixPath(fname).stem
        samples.append(Sample(images / fname, int(label) - 1, box, image_id=int(stem) if stem.isdigit() else None))
    return samples


def read_all(root: Path) -> tuple[list[Sample], list[Sample], list[str], Path]:
    """(official train samples, official test samples, class names, dataset folder), all checked."""
    base = find_base(root)
    devkit = base / "devkit"
    names = read_class_names(devkit / "cars_meta.mat")
    p_train = devkit / "cars_train_annos.mat"
    if not p_train.is_file():
        raise UserError(f"{p_train} is missing; it holds the training labels and boxes: {HOW_TO_GET}")
    p_test = next((p for p in (base / TEST_LABELS, devkit / TEST_LABELS) if p.is_file()), None)
    if p_test is None:
        raise UserError(f"{TEST_LABELS} is in neither {base} nor {devkit}; the devkit's cars_test_annos.mat has "
                        f"no labels, so get {TEST_LABELS} and put it in {base}")
    for folder in ("cars_train", "cars_test"):
        if not (base / folder).is_dir():
            raise UserError(f"{base / folder} is missing; the Stanford Cars layout keeps the images there: {HOW_TO_GET}")
    train = read_annotations(p_train, len(names), base / "cars_train")
    test = read_annotations(p_test, len(names), base / "cars_test")
    check_classes_have_images(train, names, p_train, "train")
    return train, test, names, base


def load(root, split: str, transform=None, *, val_fraction: float = 0.1, seed: int = 0) -> FineGrainedDataset:
    """Split 'train' (official train minus val), 'val' (``val_fraction`` of each class of official
    train, seeded) or 'test' (official test) of the Stanford Cars dataset under ``root``."""
    train, test, names, base = read_all(Path(root))
    return split_dataset(train, test, names, base, split, transform, val_fraction=val_fraction, seed=seed,
                         name="cars", how_to_get=HOW_TO_GET)


__all__ = ["load", "read_all", "read_annotations", "read_class_names"]
