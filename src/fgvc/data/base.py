"""The dataset type every loader returns, and the split helpers they share."""

from __future__ import annotations

import contextlib
import math
import random
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from fgvc.errors import ImageTooLarge, UnreadableImage, UserError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0-based class index
    box: tuple[float, float, float, float] | None = None  # x, y, width, height in source-image pixels
    image_id: int | None = None  # the dataset's own id (CUB's 1-based image id), when it has one
    more_boxes: tuple[tuple[float, float, float, float], ...] = ()  # further instances (a VOC file's other objects)

    @property
    def boxes(self) -> list[tuple[float, float, float, float]]:
        """Every instance's box (x, y, width, height), ``box`` first; empty when the sample has none."""
        return [] if self.box is None else [self.box, *self.more_boxes]


def read_rgb(path: Path | BinaryIO, min_side: int | None = None) -> Image.Image:
    """Decode an image file to RGB with EXIF orientation applied, or raise UnreadableImage naming it.

    An image over PIL's decompression-bomb limit raises the subclass ImageTooLarge, undecoded.

    With ``min_side``, a JPEG is decoded at the smallest of its 1/2, 1/4, 1/8 DCT scales
    whose sides stay >= min_side (PIL's draft mode): a 500 px photo headed for 224 px
    decodes 4x fewer pixels, and the following resize sees nearly the same image.
    """
    with _image_errors(path, "cannot be decoded"), Image.open(path) as im:
        if min_side and im.format == "JPEG":
            im.draft("RGB", (min_side, min_side))
        return _to_rgb(ImageOps.exif_transpose(im))


@contextlib.contextmanager
def _image_errors(path, failure: str):
    """Turn what PIL raises on ``path`` into one sentence: UnreadableImage (missing, or ``failure`` with the
    error's name) or ImageTooLarge. PIL only warns between its pixel limit and twice that; fgvc refuses both,
    since no training image needs ~90 megapixels and a crafted file could take gigabytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except FileNotFoundError:
        raise UnreadableImage(f"image {path} does not exist; check the dataset root") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageTooLarge(f"image {path} has more pixels than PIL's decompression-bomb limit "
                            f"({Image.MAX_IMAGE_PIXELS} pixels); shrink it or remove it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(f"image {path} {failure} ({e.__class__.__name__}); remove or replace it") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    # RGBA/LA/PA, or a palette, grey or RGB PNG whose tRNS chunk marks a transparent colour
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        # composite on white so transparent areas do not turn black
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode.startswith("I"):
        # 16-bit grayscale (I;16, I;16B, ... or I): scale to 8 bit before RGB conversion
        return im.convert("I").point(lambda v: v / 256).convert("L").convert("RGB")
    return im.convert("RGB")


class FineGrainedDataset(Dataset):
    """Images with 0-based labels, class names and optional boxes.

    ``__getitem__`` returns ``(image, label)`` where image is ``transform(PIL RGB)``;
    with ``return_boxes=True`` it returns ``(image, label, box)``, the box an
    ``(4,)`` XYXY tensor moved through the same (torchvision v2) transform, or
    ``nan`` values when the sample has no box. When some sample has several instances
    (``Sample.more_boxes``), every item's boxes are ``(K, 4)``, K the most any sample has,
    rows of ``nan`` padding the samples with fewer.
    """

    def __init__(self, samples: list[Sample], class_names: list[str], transform=None, name: str = "",
                 split: str = "", root: Path | None = None):
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.transform = transform
        self.name = name
        self.split = split
        self.root = root  # the folder the loader read (e.g. .../CUB_200_2011)
        self.return_boxes = False
        # see read_rgb; None: the transform's own (fgvc's pipelines carry it), so every path decodes alike
        self.decode_min_side: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]

    @property
    def has_boxes(self) -> bool:
        return bool(self.samples) and all(s.box is not None for s in self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        # boxes are in source pixels, so images with boxes are decoded at full size
        min_side = self.decode_min_side
        if min_side is None:
            min_side = getattr(self.transform, "decode_min_side", None)
        image = read_rgb(sample.path, None if self.return_boxes else min_side)
        if not self.return_boxes:
            return (self.transform(image) if self.transform else image), sample.label
        k = self._max_instances()
        out = torch.full((k, 4), float("nan"))
        if sample.box is None:
            image = self.transform(image) if self.transform else image
        else:
            boxes = tv_tensors.BoundingBoxes([[x, y, x + w, y + h] for x, y, w, h in sample.boxes], format="XYXY",
                                             canvas_size=(image.height, image.width))
            if self.transform:
                image, boxes = self.transform(image, boxes)
            out[:len(sample.boxes)] = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        return image, sample.label, (out[0] if k == 1 else out)

    def _max_instances(self) -> int:
        # one shape for every item, so a DataLoader can batch them; (4,) as before when no sample has two
        if getattr(self, "_instances", None) is None or self._instances[0] is not self.samples:
            self._instances = (self.samples, max([len(s.boxes) for s in self.samples] + [1]))
        return self._instances[1]


def find_unreadable(samples: list[Sample]) -> list[tuple[Sample, str]]:
    """(sample, one-sentence reason) for every sample whose image cannot be decoded; decodes each file once."""
    bad = []
    for s in samples:
        try:
            read_rgb(s.path)
        except UnreadableImage as e:
            bad.append((s, str(e)))
    return bad


def open_header(path: Path) -> None:
    """Open ``path`` as an image and read its header only (format, size: no pixels decoded), or raise
    UnreadableImage naming it: a missing, empty, non-image or over-the-pixel-limit file. A truncated
    file whose header is whole passes; only decoding (``read_rgb``) finds that."""
    with _image_errors(path, "cannot be opened as an image"), Image.open(path) as im:
        im.size  # noqa: B018 -- parsed with the header


def find_unopenable(samples: list[Sample], threads: int = 8) -> list[tuple[Sample, str]]:
    """(sample, one-sentence reason) for every sample whose file does not open as an image (``open_header``:
    headers only, a few seconds for CUB's 11 788 files); threads overlap the file reads."""
    from concurrent.futures import ThreadPoolExecutor

    def reason(sample: Sample) -> str | None:
        try:
            open_header(sample.path)
        except UnreadableImage as e:
            return str(e)
        return None

    with ThreadPoolExecutor(threads) as pool:
        return [(s, why) for s, why in zip(samples, pool.map(reason, samples)) if why]


def drop_unreadable(dataset: FineGrainedDataset) -> list[tuple[Sample, str]]:
    """Remove the samples whose image cannot be decoded from ``dataset``; return them with the reason."""
    bad = find_unreadable(dataset.samples)
    gone = {s for s, _ in bad}
    dataset.samples = [s for s in dataset.samples if s not in gone]
    return bad


def stratified_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (keep, held_out) with ``fraction`` of each class held out, seeded.

    Every class with at least two samples keeps at least one and, when fraction > 0,
    holds out at least one, so validation accuracy covers every class.
    """
    if fraction <= 0:
        return list(samples), []
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    rng = random.Random(seed)
    keep, held = [], []
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda s: str(s.path))
        rng.shuffle(group)
        n_held = min(len(group) - 1, max(1, round(fraction * len(group)))) if len(group) > 1 else 0
        held += group[:n_held]
        keep += group[n_held:]
    return keep, held


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def check_classes_have_images(samples: list[Sample], class_names: list[str], where: Path, split: str) -> None:
    counts = [0] * len(class_names)
    for s in samples:
        counts[s.label] += 1
    empty = [class_names[i] for i, n in enumerate(counts) if n == 0]
    if empty:
        raise UserError(
            f"class {empty[0]!r} has no {split} images in {where}"
            + (f" (and {len(empty) - 1} more classes)" if len(empty) > 1 else "")
            + "; add images or remove the class"
        )


def readable_name(name: str) -> str:
    """'001.Black_footed_Albatross' or 'n02085620-Chihuahua' -> 'Black footed Albatross' / 'Chihuahua'."""
    m = re.match(r"^(?:\d+\.|n\d{8}-)(.+)$", name)
    return (m.group(1) if m else name).replace("_", " ").strip()


def check_val_fraction(val_fraction: float) -> None:
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction={val_fraction} is out of range; use a value in [0, 1)")


def split_dataset(train: list[Sample], test: list[Sample], class_names: list[str], base: Path, split: str,
                  transform=None, *, val_fraction: float, seed: int, name: str, how_to_get: str) -> FineGrainedDataset:
    """The ``split`` of a dataset read as (official train, official test): 'test' as is, 'val'
    ``val_fraction`` of each class of ``train`` (stratified_split, seeded), 'train' the rest.

    Raises UserError naming the first image file of the split that does not exist (with ``how_to_get``).
    """
    check_split(split)
    check_val_fraction(val_fraction)
    keep, val = stratified_split(train, val_fraction, seed)
    samples = {"train": keep, "val": val, "test": test}[split]
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"image {missing[0]} listed in {base} does not exist{more}; the dataset is incomplete: "
                        f"{how_to_get}")
    return FineGrainedDataset(samples, class_names, transform, name=name, split=split, root=base)


def pixel_corners_to_box(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
    """1-based inclusive pixel corners (MATLAB style: FGVC-Aircraft, Stanford Cars) -> ``Sample.box``.

    Pixel k (1-based) covers [k-1, k) in the continuous 0-based coordinates ``Sample.box`` uses,
    so the box is (x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1). A corner of 0 (seen in hand-made
    annotations) is read as the first pixel. ValueError unless 0 <= x1 <= x2, 0 <= y1 <= y2, x2, y2 >= 1.
    """
    if not (0 <= x1 <= x2 < math.inf and 0 <= y1 <= y2 < math.inf and x2 >= 1 and y2 >= 1):  # false for nan too
        raise ValueError(f"({x1}, {y1}, {x2}, {y2}) is not a box with 1 <= x1 <= x2 and 1 <= y1 <= y2")
    x0, y0 = max(x1, 1) - 1, max(y1, 1) - 1
    return x0, y0, x2 - x0, y2 - y0


def detect_layout(root: Path) -> str | None:
    """The layout ``root`` looks like ('cub', 'nabirds', 'dogs', 'aircraft', 'cars', 'flowers' or 'folder'),
    for hints in error messages; None when it looks like none of them."""
    if any((root / d / "hierarchy.txt").is_file() and (root / d / "images.txt").is_file() for d in (".", "nabirds")):
        return "nabirds"
    if (root / "images.txt").is_file() or (root / "CUB_200_2011" / "images.txt").is_file():
        return "cub"
    if any((root / d / "Images").is_dir() for d in (".", "StanfordDogs")) or (root / "lists").is_dir():
        return "dogs"
    if any((root / d / "variants.txt").is_file() for d in (".", "data", "fgvc-aircraft-2013b/data")):
        return "aircraft"
    if any((root / d / "devkit" / "cars_meta.mat").is_file() or (root / d / "cars_train").is_dir()
           for d in (".", "stanford_cars")):
        return "cars"
    if any((root / d / "imagelabels.mat").is_file() for d in (".", "flowers-102", "flowers102")):
        return "flowers"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder"
    return None


LAYOUT_HINT = {
    "cub": "it looks like the CUB-200-2011 layout: use dataset cub200 (or synthbirds)",
    "nabirds": "it looks like the NABirds layout (images.txt with hierarchy.txt): use dataset nabirds",
    "dogs": "it looks like the Stanford Dogs layout: use dataset dogs (or synthdogs)",
    "aircraft": "it looks like the FGVC-Aircraft layout (variants.txt): use dataset aircraft",
    "cars": "it looks like the Stanford Cars layout (devkit/, cars_train/): use dataset cars",
    "flowers": "it looks like the Oxford Flowers-102 layout (imagelabels.mat): use dataset flowers102",
    "folder": "it looks like train/<class>/ and test/<class>/ folders: use dataset folder",
}


def find_folder(root: Path, subfolders: tuple[str, ...], marker: str, layout: str, expected: str,
                how_to_get: str) -> Path:
    """The first of ``root/<sub>`` (``subfolders``, "." for root itself) that holds ``marker``.

    Otherwise UserError: the root is missing, or it holds no ``marker`` (``expected`` says what
    should be there), with the layout ``root`` does look like (detect_layout) or ``how_to_get``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist or is not a folder; {how_to_get}")
    for sub in subfolders:
        if (root / sub / marker).exists():
            return (root / sub) if sub != "." else root
    found = detect_layout(root)
    hint = LAYOUT_HINT[found] if found and found != layout else how_to_get
    raise UserError(f"{root} holds no {marker}: expected {expected}; {hint}")


def load_mat(path: Path, how_to_fix: str, squeeze_me: bool = False) -> dict:
    """``scipy.io.loadmat`` of a dataset's .mat file; UserError (ending with ``how_to_fix``) when it is
    missing or not a MATLAB file."""
    from scipy.io import loadmat

    if not path.is_file():
        raise UserError(f"{path} is missing; {how_to_fix}")
    try:
        return loadmat(str(path), squeeze_me=squeeze_me)
    except Exception as e:  # scipy raises several types for a non-MAT file
        raise UserError(f"{path} cannot be read as a MATLAB .mat file ({e.__class__.__name__}: {e}); "
                        f"{how_to_fix}") from None


def mat_entry(path: Path, mat: dict, key: str, expected: str):
    """``mat[key]``, or UserError naming the keys the file does have (``expected`` says which file it should be)."""
    if key not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise UserError(f"{path} has no key {key!r} (found {found}); expected {expected}")
    return mat[key]
