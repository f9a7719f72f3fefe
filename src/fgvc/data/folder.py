"""Your own images as class folders: ``root/train/<class>/*``, ``root/test/<class>/*``,
optionally ``root/val/<class>/*`` (when absent, val is carved from train, stratified and seeded).

Classes are the sorted union of the class folder names of all splits, so a label means the
same class in every split. Files are found recursively; files whose extension is not an
image extension (``base.IMAGE_EXTENSIONS``) and hidden files are ignored. Symbolic links are
followed (a class folder may live elsewhere), but a link that reaches a folder or image read
already (a loop such as ``ln -s .. loop``, or a second path to another class's images) is
refused, so no image is counted twice or under two labels.
"""

from __future__ import annotations

import os
from pathlib import Path

from fgvc.data.base import (
    IMAGE_EXTENSIONS,
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

LAYOUT = "root/train/<class>/<image>, root/test/<class>/<image> and optionally root/val/<class>/<image>"


def image_files(folder: Path, seen: dict | None = None) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders skipped.

    Symlinks are followed, but every folder and image is read once: one reached again through a
    link (a loop, or another path to images already found) is refused with a UserError. Pass
    one ``seen`` dict to several calls to check across them (all class folders of a dataset).
    """
    seen = {} if seen is None else seen  # (st_dev, st_ino) -> (first path found at, the link it came through)
    out: list[Path] = []

    def visit(path: Path, link: Path | None) -> None:
        try:
            st = path.stat()
        except OSError:
            return  # a broken link or a vanished file: listed, and read_rgb names it when it is loaded
        key = (st.st_dev, st.st_ino)
        first = seen.get(key)
        if first is None or st.st_ino == 0:  # some file systems report no inode numbers
            seen[key] = (path, link)
            return
        if link is None and first[1] is None:
            return  # two plain names of one file (a hard link) are what the tree shows: kept
        via = link if link is not None else first[1]
        raise UserError(f"the symbolic link {via} leads to {first[0] if link is not None else path} a second "
                        f"time{_loop_hint(via)}, so its images would be counted twice; remove the link or "
                        "replace it with a copy of the files")

    def walk(d: Path, link: Path | None) -> None:
        visit(d, link)
        try:
            with os.scandir(d) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            raise UserError(f"folder {d} cannot be read ({e.strerror or e.__class__.__name__}); fix its "
                            "permissions or remove it") from None
        dirs = []
        for e in entries:
            via = link or (Path(e.path) if e.is_symlink() else None)
            if e.is_dir():
                dirs.append((Path(e.path), via))
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                visit(Path(e.path), via)
                out.append(Path(e.path))
        for sub, via in dirs:
            walk(sub, via)

    folder = Path(folder)
    walk(folder, folder if folder.is_symlink() else None)
    return out


def _loop_hint(link: Path) -> str:
    return " (a loop: it points to a folder that contains it)" if link.parent.resolve().is_relative_to(
        link.resolve()) else ""


def class_dirs(split_dir: Path) -> dict[str, Path]:
    stray = [p for p in split_dir.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)]
    if stray:
        raise UserError(f"{stray[0]} lies directly in {split_dir}; put each image in a class folder: {LAYOUT}")
    return {p.name: p for p in sorted(split_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist or is not a folder; expected {LAYOUT}")
    if (root / "train").is_dir():
        return
    layout = detect_layout(root)
    if layout and layout != "folder":
        raise UserError(f"{root} has no train/ folder; {LAYOUT_HINT[layout]}")
    if root.name in ("train", "val", "test") and (root.parent / "train").is_dir():
        raise UserError(f"{root} is one split's folder; pass its parent {root.parent} as the root")
    if any(image_files(p) for p in root.iterdir() if p.is_dir()):
        raise UserError(f"{root} holds class folders but no train/ folder; expected {LAYOUT}: "
                        "move them into train/ (and some into test/)")
    raise UserError(f"{root} has no train/ folder; expected {LAYOUT}")


def load(root, split: str, transform=None, *, val_fraction: float = 0.1, seed: int = 0) -> FineGrainedDataset:
    """Split 'train', 'val' or 'test' of an image-folder tree under ``root``; boxes are None."""
    check_split(split)
    check_val_fraction(val_fraction)
    root = Path(root).expanduser()
    _check_root(root)
    dirs = {s: class_dirs(root / s) for s in ("train", "val", "test") if (root / s).is_dir()}
    names = sorted(set().union(*(d.keys() for d in dirs.values())))
    if not names:
        raise UserError(f"{root / 'train'} has no class folders; expected {LAYOUT}")
    index = {n: i for i, n in enumerate(names)}
    files = {}
    seen: dict = {}  # shared by every class folder of every split: an image found twice is refused
    for s, classes in dirs.items():
        files[s] = []
        for name, folder in classes.items():
            found = image_files(folder, seen)
            if not found:
                raise UserError(f"class folder {folder} holds no images (extensions "
                                f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
            files[s] += [Sample(p, index[name]) for p in found]
    check_classes_have_images(files["train"], names, root / "train", "train")
    if "val" in files:
        train, val = files["train"], files["val"]
    else:
        train, val = stratified_split(files["train"], val_fraction, seed)
    if split == "test" and "test" not in files:
        raise UserError(f"{root / 'test'} does not exist; expected {LAYOUT}")
    samples = {"train": train, "val": val, "test": files.get("test", [])}[split]
    return FineGrainedDataset(samples, names, transform, name="folder", split=split, root=root)
