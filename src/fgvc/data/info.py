"""What a dataset holds (`fgvc data info`): classes, images per split, boxes, unreadable files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image

from fgvc.data import build_dataset
from fgvc.data.base import SPLITS, find_unreadable


def describe(name: str, root, check: bool = False, val_fraction: float = 0.1, seed: int = 0) -> dict:
    """Class count, images per split, per-class train range, boxes; with ``check`` decode every image.

    Returns {'name', 'root', 'num_classes', 'splits': {split: n}, 'train_per_class': [min, max],
    'has_boxes', 'examples': [first class names]} plus, with ``check``, 'unreadable': [{'path', 'error'}]
    and, where the dataset has boxes, 'box_edges' (``box_edges`` of the readable images).
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
        if d["has_boxes"]:
            broken = {s.path for s, _ in bad}
            d["box_edges"] = box_edges([s for ds in parts.values() for s in ds.samples if s.path not in broken])
    return d


def box_edges(samples) -> dict:
    """Where the boxes of ``samples`` sit against their images' edges (sizes from the files' headers), in the
    coordinates fgvc read them in: {'boxes', 'at_zero': boxes with x or y at 0, 'at_far_edge': x + width at the
    image's width or y + height at its height, 'beyond': past it}. Evidence for a box file's convention
    (docs/data.md, "Boxes"): corners read as 0-based pixel edges may touch 0 and the far edge, never pass it;
    a 1-based file read as 0-based touches 0 never and may pass the far edge by one pixel."""
    n = at_zero = at_far = beyond = 0
    for sample in samples:
        if not sample.boxes:
            continue
        with Image.open(sample.path) as im:
            width, height = im.size
        for x, y, w, h in sample.boxes:
            n += 1
            at_zero += x == 0 or y == 0
            at_far += x + w == width or y + h == height
            beyond += x + w > width or y + h > height
    return {"boxes": n, "at_zero": at_zero, "at_far_edge": at_far, "beyond": beyond}


def format_info(d: dict) -> str:
    """A small aligned table of ``describe``'s result."""
    rows = [("dataset", d["name"]), ("root", d["root"]), ("classes", str(d["num_classes"]))]
    rows += [(f"{s} images", str(n)) for s, n in d["splits"].items()]
    lo, hi = d["train_per_class"]
    rows.append(("train per class", f"{lo}" if lo == hi else f"{lo} to {hi}"))
    rows.append(("bounding boxes", "yes" if d["has_boxes"] else "no"))
    rows.append(("first classes", ", ".join(d["examples"])))
    if "box_edges" in d:
        e = d["box_edges"]
        rows.append(("box edges", f"of {e['boxes']} boxes {e['at_zero']} touch 0, {e['at_far_edge']} the image's far "
                                  f"edge, {e['beyond']} pass it"))
    if "unreadable" in d:  # last: the unreadable files' lines follow it
        rows.append(("unreadable", f"{len(d['unreadable'])} of {d['checked']} checked"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"  {u['path']}: {u['error']}" for u in d.get("unreadable", [])]
    return "\n".join(lines)
