"""Tiny datasets in the official layouts of FGVC-Aircraft, Stanford Cars, NABirds and Flowers-102.

Imported by name (tests/ has no packages). Each writer returns the truth the tests check against.
Images are small solid-colour JPEGs, so writing a dataset takes milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

W, H = 40, 30  # px of every written image


def jpeg(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (shade % 256, 80, 160)).save(path, quality=80)


# ---- FGVC-Aircraft: 3 variants in 3 families of 2 manufacturers
AIRCRAFT = [("707-320", "Boeing 707", "Boeing"), ("727-200", "Boeing 727", "Boeing"), ("A300B4", "A300", "Airbus")]


def write_aircraft(root: Path, trainval: int = 4, test: int = 2) -> dict:
    """``root/fgvc-aircraft-2013b/data`` with ``trainval`` + ``test`` images per variant.

    Returns {'data': folder, 'split': {id: 'trainval'|'test'}, 'variant': {id: index}, 'box': {id: corners}}.
    """
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    truth: dict = {"data": data, "split": {}, "variant": {}, "box": {}}
    lines: dict[tuple[str, str], list[str]] = {}
    boxes = []
    n = 0
    for v, (variant, family, maker) in enumerate(AIRCRAFT):
        for k in range(trainval + test):
            n += 1
            image_id = f"{1000000 + 37 * n:07d}"
            jpeg(data / "images" / f"{image_id}.jpg", 40 * v + k)
            split = "trainval" if k < trainval else "test"
            halves = [split] + ([("train", "val")[k % 2]] if split == "trainval" else [])
            for s in halves:
                for level, name in (("variant", variant), ("family", family), ("manufacturer", maker)):
                    lines.setdefault((level, s), []).append(f"{image_id} {name}")
            corners = (1 + k, 2 + v, 20 + k, 25)
            boxes.append(f"{image_id} " + " ".join(map(str, corners)))
            truth["split"][image_id], truth["variant"][image_id], truth["box"][image_id] = split, v, corners
    for (level, s), rows in lines.items():
        (data / f"images_{level}_{s}.txt").write_text("\n".join(rows) + "\n")
    (data / "variants.txt").write_text("\n".join(a for a, _, _ in AIRCRAFT) + "\n")
    (data / "families.txt").write_text("\n".join(b for _, b, _ in AIRCRAFT) + "\n")
    (data / "manufacturers.txt").write_text("Boeing\nAirbus\n")
    (data / "images_box.txt").write_text("\n".join(boxes) + "\n")
    return truth


# ---- Stanford Cars: 3 classes
CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Ram C/V Cargo Van Minivan 2012"]
CAR_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def save_annotations(path: Path, rows: list[tuple]) -> None:
    """A MATLAB struct array ``annotations`` (1 x N) with the devkit's fields, via scipy.io.savemat;
    5-value rows leave out ``class``, like the devkit's unlabelled cars_test_annos.mat."""
    import numpy as np
    from scipy.io import savemat

    rows = [tuple(r) for r in rows]
    fields = [f for f in CAR_FIELDS if f != "class" or len(rows[0]) == len(CAR_FIELDS)]
    arr = np.array(rows, dtype=[(f, "O") for f in fields]).reshape(1, -1)
    savemat(str(path), {"annotations": arr})


def write_cars(root: Path, train: int = 4, test: int = 2, test_labels_in: str = ".") -> dict:
    """``root/stanford_cars`` in the devkit layout; the labelled test file in ``test_labels_in`` ('.' or 'devkit').

    Returns {'base': folder, 'train': {fname: (label, corners)}, 'test': {...}}.
    """
    import numpy as np
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    savemat(str(base / "devkit" / "cars_meta.mat"), {"class_names": np.array(CARS, dtype=object).reshape(1, -1)})
    truth: dict = {"base": base, "train": {}, "test": {}}
    for split, per_class in (("train", train), ("test", test)):
        rows, n = [], 0
        for c in range(len(CARS)):
            for k in range(per_class):
                n += 1
                fname = f"{n:05d}.jpg"
                jpeg(base / f"cars_{split}" / fname, 50 * c + k)
                corners = (1 + k, 3 + c, 30 - k, 28)
                rows.append((*corners, c + 1, fname))
                truth[split][fname] = (c, corners)
        where = base / "devkit" / "cars_train_annos.mat" if split == "train" else \
            base / test_labels_in / "cars_test_annos_withlabels.mat"
        save_annotations(where, rows)
    return truth


# ---- NABirds: a hierarchy whose leaves (ids 295, 313, 1004) carry the images; ids not contiguous
NABIRDS_CLASSES = {0: "Birds", 1: "Perching Birds", 22: "Hummingbirds", 295: "Black-chinned Hummingbird (Adult Male)",
                   313: "Anna's Hummingbird (Female/juvenile)", 1004: "Song Sparrow"}
NABIRDS_HIERARCHY = [(1, 0), (22, 1), (295, 22), (313, 22), (1004, 1)]
NABIRDS_LEAVES = [295, 313, 1004]


def write_nabirds(root: Path, train: int = 4, test: int = 2) -> dict:
    """``root/nabirds`` in the official layout with UUID ids and folders named by class id.

    Returns {'base': folder, 'split': {rel path: 1|0}, 'class': {rel path: class id}, 'box': {rel path: (x,y,w,h)}}.
    """
    import uuid

    base = root / "nabirds"
    base.mkdir(parents=True)
    truth: dict = {"base": base, "split": {}, "class": {}, "box": {}}
    files: dict[str, list[str]] = {k: [] for k in ("images", "image_class_labels", "train_test_split",
                                                   "bounding_boxes")}
    rng_ids = [uuid.UUID(int=(7919 * n) << 64 | n) for n in range(1, 1 + len(NABIRDS_LEAVES) * (train + test))]
    n = 0
    for c, cid in enumerate(reversed(NABIRDS_LEAVES)):  # file order differs from id order
        for k in range(train + test):
            image_id = str(rng_ids[n])
            n += 1
            rel = f"{cid:04d}/{image_id.replace('-', '')}.jpg"
            jpeg(base / "images" / rel, 60 * c + k)
            is_train = int(k < train)
            box = (2 + k, 1 + c, 20, 15)
            files["images"].append(f"{image_id} {rel}")
            files["image_class_labels"].append(f"{image_id} {cid}")
            files["train_test_split"].append(f"{image_id} {is_train}")
            files["bounding_boxes"].append(f"{image_id} " + " ".join(map(str, box)))
            truth["split"][rel], truth["class"][rel], truth["box"][rel] = is_train, cid, box
    for name, rows in files.items():
        (base / f"{name}.txt").write_text("\n".join(rows) + "\n")
    (base / "classes.txt").write_text("".join(f"{k} {v}\n" for k, v in NABIRDS_CLASSES.items()))
    (base / "hierarchy.txt").write_text("".join(f"{a} {b}\n" for a, b in NABIRDS_HIERARCHY))
    return truth


# ---- Flowers-102: labels 1..3, images numbered in an order that mixes classes and sets
def write_flowers(root: Path, per_set: tuple[int, int, int] = (2, 2, 3), classes: int = 3) -> dict:
    """``root/flowers-102`` with jpg/, imagelabels.mat and setid.mat (trnid, valid, tstid per class counts).

    Returns {'base': folder, 'label': {image number: 1-based label}, 'set': {image number: set key}}.
    """
    import numpy as np
    from scipy.io import savemat

    base = root / "flowers-102"
    truth: dict = {"base": base, "label": {}, "set": {}}
    sets: dict[str, list[int]] = {"trnid": [], "valid": [], "tstid": []}
    order = [(c, k, s) for s, count in zip(sets, per_set) for k in range(count) for c in range(1, classes + 1)]
    for n, (c, k, s) in enumerate(sorted(order, key=lambda t: (t[1] * 7 + t[0] * 3) % 11), start=1):
        jpeg(base / "jpg" / f"image_{n:05d}.jpg", 30 * c + k)
        truth["label"][n], truth["set"][n] = c, s
        sets[s].append(n)
    labels = [truth["label"][n] for n in range(1, len(order) + 1)]
    savemat(str(base / "imagelabels.mat"), {"labels": np.array(labels, dtype=np.uint8).reshape(1, -1)})
    savemat(str(base / "setid.mat"), {k: np.array(v, dtype=np.uint16).reshape(1, -1) for k, v in sets.items()})
    return truth
