"""What a dataset holds (`fgvc data info`): classes, images per split, boxes, unreadable files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fgvc.data import build_dataset
from fgvc.data.base import SPLITS, find_unreadable


def describe(name: str, root, check: bool = False, val_fraction: float = 0.1, seed: int = 0) -> dict:
    """Class count, images per split, per-class train range, boxes; with ``check`` decode every image.

    Returns {'name', 'root', 'num_classes', 'splits': {split: n}, 'train_per_class': [min, max],
    'has_boxes', 'examples': [first class names]} plus, with ``check``, 'unreadable': [{'path', 'error'}].
    """
    parts = {s: build_dataset(name, root, s, None, val_fraction=val_fraction, seed=seed) for s in SPLITS}
    train = parts["train"]
    counts = Counter(train.targets)
    per_class = [counts.get(i, 0) for i in range(len(train.class_names))]
    d = {
        "name": name,
        "root": str(train.root or Path(root)),
        "num_classes": len(train.class_names),
        "splits": {s: len(ds) for s, ds in parts.items()},
        "train_per_class": [min(per_class), max(per_class)],
        "has_boxes": all(ds.has_boxes for ds in parts.values() if len(ds)),
        "examples": train.class_names[:3],
    }
    if check:
        bad = [(s, why) for ds in parts.values() for s, why in find_unreadable(ds.samples)]
        d["checked"] = sum(d["splits"].values())
        d["unreadable"] = [{"path": str(s.path), "error": why} for s, why in bad]
    return d


def format_info(d: dict) -> str:
    """A small aligned table of ``describe``'s result."""
    rows = [("dataset", d["name"]), ("root", d["root"]), ("classes", str(d["num_classes"]))]
    rows += [(f"{s} images", str(n)) for s, n in d["splits"].items()]
    lo, hi = d["train_per_class"]
    rows.append(("train per class", f"{lo}" if lo == hi else f"{lo} to {hi}"))
    rows.append(("bounding boxes", "yes" if d["has_boxes"] else "no"))
    rows.append(("first classes", ", ".join(d["examples"])))
    if "unreadable" in d:
        rows.append(("unreadable", f"{len(d['unreadable'])} of {d['checked']} checked"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"  {u['path']}: {u['error']}" for u in d.get("unreadable", [])]
    return "\n".join(lines)
