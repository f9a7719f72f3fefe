"""CUB-200-2011 (and synthbirds) in the official file layout.

``CUB_200_2011/images.txt``, ``image_class_labels.txt``, ``train_test_split.txt`` and
``classes.txt`` are required; ``bounding_boxes.txt`` is optional (boxes are then None);
``parts/`` and ``attributes/`` are ignored. The official test split is returned as is;
validation is carved from the official train split, stratified and seeded, so model
selection never sees test images. Images are decoded lazily, in ``__getitem__``.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

from fgvc.data.base import (
    LAYOUT_HINT,
    FineGrainedDataset,
    Sample,
    check_classes_have_images,
    check_split,
    check_val_fraction,
    detect_layout,
    stratified_split,
)
from fgvc.errors import UserError

FOLDER = "CUB_200_2011"
REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
HOW_TO_GET = "run `fgvc data prepare cub200 --root DIR` or `fgvc data synth --root DIR`"


def find_base(root: Path) -> Path:
    """The ``CUB_200_2011`` folder: ``root`` itself or ``root/CUB_200_2011``; UserError with a hint otherwise."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist or is not a folder; {HOW_TO_GET}")
    for base in (root / FOLDER, root):
        if (base / "images.txt").is_file():
            if detect_layout(base) == "nabirds":  # CUB-like files, but UUID ids and sparse class ids
                raise UserError(f"{base} holds images.txt but is not CUB: {LAYOUT_HINT['nabirds']}")
            return base
    if (root / FOLDER).is_dir():
        raise UserError(f"{root / FOLDER / 'images.txt'} is missing, so the dataset is incomplete; "
                        f"extract it again or {HOW_TO_GET}")
    if (root.parent / "images.txt").is_file() and root.name == "images":
        raise UserError(f"{root} is the images/ folder of a CUB dataset; pass its parent "
                        f"{root.parent.parent} (the folder holding {FOLDER}/) as the root")
    if (root / f"{FOLDER}.tgz").is_file():
        raise UserError(f"{root} holds {FOLDER}.tgz but it is not extracted; "
                        f"run `fgvc data prepare cub200 --root {root}`")
    layout = detect_layout(root)
    hint = f"; {LAYOUT_HINT[layout]}" if layout and layout != "cub" else f"; {HOW_TO_GET}"
    raise UserError(f"{root} holds no {FOLDER}/images.txt: expected the folder that contains "
                    f"{FOLDER}/ or that folder itself{hint}")


def read_rows(path: Path, expected: str, ncols: int, text_last: bool = False) -> list[tuple[int, list[str]]]:
    """Non-blank lines of ``path`` as (line number, fields); BOM and CRLF are fine; bad lines name the line."""
    if not path.is_file():
        raise UserError(f"{path} is missing; the CUB layout needs {', '.join(REQUIRED)} in {path.parent}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # drops a BOM; splitlines() below takes CRLF and CR too
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{path} is not UTF-8 text (line {line}: {e.reason} at byte {e.start}); save it as "
                        f"UTF-8 with lines '{expected}'") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(None, ncols - 1) if text_last else line.split()
        if text_last and len(fields) == ncols:
            fields[-1] = fields[-1].strip()
        if len(fields) != ncols:
            shown = line.strip() if len(line.strip()) <= 80 else line.strip()[:77] + "..."
            raise UserError(f"{path} line {n}: expected '{expected}', got {shown!r}")
        out.append((n, fields))
    return out


def parse_int(path: Path, n: int, value: str, expected: str, allowed=None) -> int:
    try:
        v = int(value)
    except ValueError:
        v = None
    if v is None or v < (0 if allowed else 1) or (allowed is not None and v not in allowed):
        raise UserError(f"{path} line {n}: expected '{expected}', got {value!r} where a "
                        + ("value in " + "/".join(map(str, allowed)) if allowed else "positive integer") + " belongs")
    return v


def _id_table(path: Path, expected: str, ncols: int, parse, text_last: bool = False) -> tuple[dict, dict]:
    """({image id: parse(line number, other fields)}, {image id: line number}); duplicate ids name both lines."""
    table, lines = {}, {}
    for n, fields in read_rows(path, expected, ncols, text_last):
        i = parse_int(path, n, fields[0], expected)
        if i in table:
            raise UserError(f"{path} line {n}: id {i} already appears on line {lines[i]}; ids must be unique")
        table[i], lines[i] = parse(n, fields[1:]), n
    return table, lines


def check_same_ids(images: tuple[dict, dict], other: tuple[dict, dict], images_path: Path, other_path: Path) -> None:
    a, b = set(images[0]), set(other[0])
    if a - b:
        i = min(a - b)
        raise UserError(f"image id {i} ({images_path.name} line {images[1][i]}) is missing from "
                        f"{other_path}; every image needs one line in each file")
    if b - a:
        i = min(b - a)
        raise UserError(f"{other_path} line {other[1][i]}: image id {i} is not in {images_path}")


def parse_box(path: Path, n: int, fields: list[str]) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in fields)
    except ValueError:
        x = y = w = h = float("nan")
    if not (0 < w < math.inf and 0 < h < math.inf and 0 <= x < math.inf and 0 <= y < math.inf):  # nan too
        raise UserError(f"{path} line {n}: expected '<image_id> <x> <y> <width> <height>' with x, y >= 0 "
                        f"and positive width and height in pixels, got {' '.join(fields)!r}")
    return x, y, w, h


def relative_path(path: Path, n: int, fields: list[str]) -> str:
    rel = fields[0].replace("\\", "/")
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
        raise UserError(f"{path} line {n}: image path {rel!r} must be relative to the images/ folder, "
                        "without '..'")
    return rel


def read_all(root: Path) -> tuple[list[Sample], list[Sample], list[str], Path]:
    """(official train samples, official test samples, class names, CUB_200_2011 folder), all checked."""
    base = find_base(root)
    p_img, p_lab, p_split, p_cls = (base / f for f in REQUIRED)
    p_box = base / "bounding_boxes.txt"
    images = _id_table(p_img, "<image_id> <relative/path.jpg>", 2, lambda n, f: relative_path(p_img, n, f),
                       text_last=True)
    labels = _id_table(p_lab, "<image_id> <class_id>", 2,
                       lambda n, f: parse_int(p_lab, n, f[0], "<image_id> <class_id>"))
    is_train = _id_table(p_split, "<image_id> <is_training_image 1|0>", 2,
                         lambda n, f: parse_int(p_split, n, f[0], "<image_id> <is_training_image 1|0>", (0, 1)))
    classes = _id_table(p_cls, "<class_id> <NNN.Class_name>", 2, lambda n, f: f[0], text_last=True)
    boxes = (_id_table(p_box, "<image_id> <x> <y> <width> <height>", 5, lambda n, f: parse_box(p_box, n, f))
             if p_box.is_file() else None)
    for other, path in ((labels, p_lab), (is_train, p_split)) + (((boxes, p_box),) if boxes else ()):
        check_same_ids(images, other, p_img, path)
    first_line: dict[str, int] = {}
    for i in sorted(images[0]):  # one file under two ids would be counted twice (perhaps in train and test)
        n = first_line.setdefault(images[0][i], images[1][i])
        if n != images[1][i]:
            raise UserError(f"{p_img} line {images[1][i]}: image {images[0][i]!r} is already listed on line {n}; "
                            "list each image once")
    class_ids = sorted(classes[0])
    if not class_ids:
        raise UserError(f"{p_cls} lists no classes; expected lines '<class_id> <NNN.Class_name>'")
    index = {cid: i for i, cid in enumerate(class_ids)}
    names = [classes[0][cid] for cid in class_ids]
    image_dir = base / "images"
    if not image_dir.is_dir():
        raise UserError(f"{image_dir} is missing; the CUB layout keeps the image files there")
    train, test = [], []
    for i in sorted(images[0]):
        label = labels[0][i]
        if label not in index:
            raise UserError(f"{p_lab} line {labels[1][i]}: class id {label} is not in {p_cls}")
        s = Sample(image_dir / images[0][i], index[label], boxes[0][i] if boxes else None, image_id=i)
        (train if is_train[0][i] else test).append(s)
    check_classes_have_images(train, names, p_split, "train")
    return train, test, names, base


def _check_files_exist(samples: list[Sample], base: Path) -> None:
    missing = [s for s in samples if not s.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"image {missing[0].path} (id {missing[0].image_id} in {base / 'images.txt'}) does not "
                        f"exist{more}; the dataset is incomplete: extract it again or {HOW_TO_GET}")


def load(root, split: str, transform=None, *, val_fraction: float = 0.1, seed: int = 0) -> FineGrainedDataset:
    """Split 'train' (official train minus val), 'val' (``val_fraction`` of each class of official
    train, seeded) or 'test' (official test) of the CUB-layout dataset under ``root``."""
    check_split(split)
    check_val_fraction(val_fraction)
    train, test, names, base = read_all(Path(root))
    keep, val = stratified_split(train, val_fraction, seed)
    samples = {"train": keep, "val": val, "test": test}[split]
    _check_files_exist(samples, base)
    return FineGrainedDataset(samples, names, transform, name="cub200", split=split, root=base)
