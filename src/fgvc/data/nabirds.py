"""NABirds (Van Horn et al. 2015, "Building a bird recognition app and large scale dataset with
citizen scientists") in the official layout.

``nabirds/`` holds CUB-like files keyed by UUID image ids: ``images.txt`` (``<id> <relative
path>`` under ``images/``), ``image_class_labels.txt``, ``train_test_split.txt`` (1 = train),
``classes.txt`` (``<class id> <name with spaces>``), ``hierarchy.txt`` (child, parent) and
optionally ``bounding_boxes.txt`` (``<id> <x> <y> <width> <height>`` in pixels, read as CUB's).
Class ids are not contiguous and only leaf classes have images: the ids images use are mapped,
in increasing order, to labels 0..k-1, named by ``classes.txt`` (555 classes in the official
release). Lines are parsed with CUB's readers (fgvc.data.cub). There is no download (it needs
the terms form). Test is the official test split; val is carved from train, stratified, seeded.
"""

from __future__ import annotations

import re
from pathlib import Path

from fgvc.data.base import FineGrainedDataset, Sample, check_classes_have_images, find_folder, split_dataset
from fgvc.data.cub import check_same_ids, parse_box, parse_int, read_rows, relative_path
from fgvc.errors import UserError

FOLDER = "nabirds"
REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
HOW_TO_GET = ("download NABirds after accepting its terms at https://dl.allaboutbirds.org/nabirds and extract "
              f"it so that DIR/{FOLDER} holds images.txt and images/")
_UUID = re.compile(r"^[0-9A-Za-z-]+$")


def find_base(root: Path) -> Path:
    """The folder holding ``images.txt`` and ``hierarchy.txt``: ``root`` or ``root/nabirds``."""
    return find_folder(root, (".", FOLDER), "hierarchy.txt", "nabirds",
                       f"the NABirds folder with images.txt, classes.txt, hierarchy.txt and images/ (or a folder "
                       f"holding {FOLDER}/)", HOW_TO_GET)


def _table(path: Path, expected: str, ncols: int, parse, text_last: bool = False) -> tuple[dict, dict]:
    """({image id: parse(line number, other fields)}, {image id: line number}) for UUID-keyed files."""
    if not path.is_file():
        raise UserError(f"{path} is missing; the NABirds layout needs {', '.join(REQUIRED)} in {path.parent}")
    table, lines = {}, {}
    for n, fields in read_rows(path, expected, ncols, text_last):
        i = fields[0]
        if not _UUID.match(i):
            raise UserError(f"{path} line {n}: image id {i!r} must be letters, digits and '-'")
        if i in table:
            raise UserError(f"{path} line {n}: id {i} already appears on line {lines[i]}; ids must be unique")
        table[i], lines[i] = parse(n, fields[1:]), n
    return table, lines


def _class_id(path: Path, n: int, value: str, expected: str) -> int:
    # NABirds numbers its classes from 0 (the root, "Birds"); cub.parse_int wants ids from 1
    if not value.isdigit():
        raise UserError(f"{path} line {n}: expected '{expected}', got {value!r} where a class id (0, 1, ...) belongs")
    return int(value)


def read_all(root: Path) -> tuple[list[Sample], list[Sample], list[str], Path]:
    """(official train samples, official test samples, class names, nabirds folder), all checked."""
    base = find_base(root)
    p_img, p_lab, p_split, p_cls = (base / f for f in REQUIRED)
    p_box = base / "bounding_boxes.txt"
    images = _table(p_img, "<image_id> <relative/path.jpg>", 2, lambda n, f: relative_path(p_img, n, f),
                    text_last=True)
    labels = _table(p_lab, "<image_id> <class_id>", 2, lambda n, f: _class_id(p_lab, n, f[0], "<image_id> <class_id>"))
    is_train = _table(p_split, "<image_id> <is_training_image 1|0>", 2,
                      lambda n, f: parse_int(p_split, n, f[0], "<image_id> <is_training_image 1|0>", (0, 1)))
    if not p_cls.is_file():
        raise UserError(f"{p_cls} is missing; the NABirds layout needs {', '.join(REQUIRED)} in {base}")
    classes: dict[int, tuple[str, int]] = {}
    for n, (cid, name) in read_rows(p_cls, "<class_id> <class name>", 2, text_last=True):
        k = _class_id(p_cls, n, cid, "<class_id> <class name>")
        if k in classes:
            raise UserError(f"{p_cls} line {n}: class id {k} already appears on line {classes[k][1]}; ids must be unique")
        classes[k] = (name, n)
    boxes = (_table(p_box, "<image_id> <x> <y> <width> <height>", 5, lambda n, f: parse_box(p_box, n, f))
             if p_box.is_file() else None)
    for other, path in ((labels, p_lab), (is_train, p_split)) + (((boxes, p_box),) if boxes else ()):
        check_same_ids(images, other, p_img, path)
    first: dict[str, int] = {}
    for i, rel in images[0].items():
        n = first.setdefault(rel, images[1][i])
        if n != images[1][i]:
            raise UserError(f"{p_img} line {images[1][i]}: image {rel!r} is already listed on line {n}; "
                            "list each image once")
    unknown = [i for i in images[0] if labels[0][i] not in classes]
    if unknown:
        i = unknown[0]
        raise UserError(f"{p_lab} line {labels[1][i]}: class id {labels[0][i]} is not in {p_cls}")
    used = sorted({labels[0][i] for i in images[0]})  # leaf classes only: the ids images carry
    index = {cid: k for k, cid in enumerate(used)}
    names = [classes[cid][0] for cid in used]
    image_dir = base / "images"
    if not image_dir.is_dir():
        raise UserError(f"{image_dir} is missing; the NABirds layout keeps the image files there: {HOW_TO_GET}")
    train, test = [], []
    for i in sorted(images[0], key=lambda i: images[1][i]):  # file order
        s = Sample(image_dir / images[0][i], index[labels[0][i]], boxes[0][i] if boxes else None)
        (train if is_train[0][i] else test).append(s)
    check_classes_have_images(train, names, p_split, "train")
    return train, test, names, base


def load(root, split: str, transform=None, *, val_fraction: float = 0.1, seed: int = 0) -> FineGrainedDataset:
    """Split 'train' (official train minus val), 'val' (``val_fraction`` of each class of official
    train, seeded) or 'test' (official test) of the NABirds dataset under ``root``."""
    train, test, names, base = read_all(Path(root))
    return split_dataset(train, test, names, base, split, transform, val_fraction=val_fraction, seed=seed,
                         name="nabirds", how_to_get=f"extract it again or {HOW_TO_GET}")


__all__ = ["load", "read_all"]
