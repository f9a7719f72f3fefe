"""Oxford Flowers-102 (Nilsback and Zisserman 2008, "Automated flower classification over a large
number of classes") in the official layout.

``jpg/image_NNNNN.jpg`` (8189 images), ``imagelabels.mat`` (``labels``: 1..102, one per image in
file-number order) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``: 1-based image numbers of
the official train, val and test sets). The folder is ``root`` or ``root/flowers-102``
(torchvision's name). The dataset ships no class names; fgvc names label k by the k-th entry of
the list CLIP's authors used (openai/CLIP data/prompts.md, MIT licence), typos kept so prompts
match theirs. Splits as for FGVC-Aircraft: papers train on train + val (10 + 10 images per class)
and report test, so fgvc's test is the official test set and val is carved from train + val
(``val_fraction``, stratified, seeded). No boxes. ``fgvc data prepare flowers102`` downloads
102flowers.tgz and the two .mat files from robots.ox.ac.uk into ``root/flowers-102``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fgvc.data.base import (
    FineGrainedDataset,
    Sample,
    check_classes_have_images,
    find_folder,
    load_mat,
    mat_entry,
    split_dataset,
)
from fgvc.errors import UserError

FOLDER = "flowers-102"
HOW_TO_GET = ("run `fgvc data prepare flowers102 --root DIR`, or put jpg/ (from 102flowers.tgz), imagelabels.mat "
              "and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ in DIR/flowers-102")
SETS = ("trnid", "valid", "tstid")
NAMES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot",
    "king protea", "spear thistle", "yellow iris", "globe flower", "purple coneflower", "peruvian lily",
    "balloon flower", "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke",
    "sweet william", "carnation", "garden phlox", "love in the mist", "mexican aster", "alpine sea holly",
    "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip", "lenten rose", "barbeton daisy",
    "daffodil", "sword lily", "poinsettia", "bolero deep blue", "wallflower", "marigold", "buttercup",
    "oxeye daisy", "common dandelion", "petunia", "wild pansy", "primula", "sunflower", "pelargonium",
    "bishop of llandaff", "gaura", "geranium", "orange dahlia", "pink and yellow dahlia", "cautleya spicata",
    "japanese anemone", "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose", "thorn apple",
    "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani", "clematis", "hibiscus",
    "columbine", "desert-rose", "tree mallow", "magnolia", "cyclamen", "watercress", "canna lily",
    "hippeastrum", "bee balm", "air plant", "foxglove", "bougainvillea", "camellia", "mallow",
    "mexican petunia", "bromelia", "blanket flower", "trumpet creeper", "blackberry lily",
)


def find_base(root: Path) -> Path:
    """The folder holding ``imagelabels.mat``: ``root/flowers-102`` or ``root`` (`prepare` keeps the downloaded
    .mat files in ``root`` too)."""
    return find_folder(root, (FOLDER, "."), "imagelabels.mat", "flowers",
                       f"the Flowers-102 folder with jpg/, imagelabels.mat and setid.mat (or a folder holding "
                       f"{FOLDER}/)", HOW_TO_GET)


def _numbers(path: Path, key: str, mat: dict, low: int, high: int, what: str, note: str = "") -> list[int]:
    """The integers of ``mat[key]``, each in [low, high]; UserError naming the file, key and entry otherwise."""
    values = np.asarray(mat_entry(path, mat, key, "the official Flowers-102 file")).reshape(-1)
    out = []
    for i, v in enumerate(values, start=1):
        x = float(v) if np.asarray(v).dtype.kind in "buif" else math.nan
        if not (math.isfinite(x) and x == int(x) and low <= x <= high):
            shown = v.item() if isinstance(v, np.generic) else v
            raise UserError(f"{path}: entry {i} of {key!r} is {shown!r}; expected {what} from {low} to {high}{note}")
        out.append(int(x))
    return out


def _loadmat(path: Path) -> dict:
    return load_mat(path, f"the Flowers-102 layout needs imagelabels.mat and setid.mat: {HOW_TO_GET}")


def read_all(root: Path) -> tuple[list[Sample], list[Sample], list[str], Path]:
    """(official train + val samples, official test samples, class names, dataset folder), all checked."""
    base = find_base(root)
    p_labels, p_sets = base / "imagelabels.mat", base / "setid.mat"
    labels = _numbers(p_labels, "labels", _loadmat(p_labels), 1, len(NAMES), "a class number")
    sets_mat = _loadmat(p_sets)
    sets = {k: _numbers(p_sets, k, sets_mat, 1, len(labels), "an image number",
                        f" (imagelabels.mat labels {len(labels)} images)") for k in SETS}
    where: dict[int, str] = {}
    for k in SETS:
        for n in sets[k]:
            if n in where:
                raise UserError(f"{p_sets}: image {n} is in both {where[n]!r} and {k!r}; an image belongs to one set")
            where[n] = k
    images = base / "jpg"
    if not images.is_dir():
        raise UserError(f"{images} is missing; the Flowers-102 layout keeps the images there: {HOW_TO_GET}")
    names = list(NAMES[:max(labels)])

    def samples(numbers: list[int]) -> list[Sample]:
        return [Sample(images / f"image_{n:05d}.jpg", labels[n - 1] - 1, image_id=n) for n in numbers]

    train = samples(sets["trnid"] + sets["valid"])
    check_classes_have_images(train, names, p_sets, "trnid + valid")
    return train, samples(sets["tstid"]), names, base


def load(root, split: str, transform=None, *, val_fraction: float = 0.1, seed: int = 0) -> FineGrainedDataset:
    """Split 'train' (official train + val minus fgvc's val), 'val' (``val_fraction`` of each class of
    official train + val, seeded) or 'test' (official test) of Flowers-102 under ``root``."""
    train, test, names, base = read_all(Path(root))
    return split_dataset(train, test, names, base, split, transform, val_fraction=val_fraction, seed=seed,
                         name="flowers102", how_to_get=HOW_TO_GET)


__all__ = ["NAMES", "load", "read_all"]
