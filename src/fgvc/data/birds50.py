"""birds50: 50 species of CUB-200-2011 at 227 x 227 px, in CUB's own layout (`fgvc data birds50`).

Many measurements in docs/ use this subset: small enough for a 2-core CPU, real photographs. The
copy they were measured on came from a public 100-class subset of CUB-200-2011 whose publisher had
resized every image to 227 x 227; birds50 is every second class of it, the 50 species of ``SPECIES``
with all their images and CUB's official train/test split (30 training images per species, 1500 in
all; 1452 test images). ``build`` makes the same subset from the CUB-200-2011 archive (``fgvc data
prepare cub200``): the 50 species, their official split, every image resized whole to ``size`` x
``size`` (227 by default). The publisher's resizing method is not documented; this one squashes the
whole image to a square (bicubic, JPEG quality 95), so its pixels, and the accuracies measured on it,
may differ slightly from ours. Without resizing, the same species are
``data.name=cub200 data.classes=`` ``DATA_CLASSES`` on the full dataset.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from fgvc.errors import UserError

# CUB-200-2011 class ids (1-based, as in its classes.txt) and names, in birds50's order
SPECIES = (
    (1, "Black_footed_Albatross"), (7, "Parakeet_Auklet"), (12, "Yellow_headed_Blackbird"),
    (14, "Indigo_Bunting"), (16, "Painted_Bunting"), (19, "Gray_Catbird"), (24, "Red_faced_Cormorant"),
    (28, "Brown_Creeper"), (35, "Purple_Finch"), (42, "Vermilion_Flycatcher"), (47, "American_Goldfinch"),
    (50, "Eared_Grebe"), (52, "Pied_billed_Grebe"), (54, "Blue_Grosbeak"), (56, "Pine_Grosbeak"),
    (58, "Pigeon_Guillemot"), (61, "Heermann_Gull"), (67, "Anna_Hummingbird"), (69, "Rufous_Hummingbird"),
    (73, "Blue_Jay"), (77, "Tropical_Kingbird"), (80, "Green_Kingfisher"), (83, "White_breasted_Kingfisher"),
    (86, "Pacific_Loon"), (88, "Western_Meadowlark"), (90, "Red_breasted_Merganser"),
    (94, "White_breasted_Nuthatch"), (96, "Hooded_Oriole"), (98, "Scott_Oriole"), (101, "White_Pelican"),
    (106, "Horned_Puffin"), (110, "Geococcyx"), (120, "Fox_Sparrow"), (124, "Le_Conte_Sparrow"),
    (134, "Cape_Glossy_Starling"), (138, "Tree_Swallow"), (140, "Summer_Tanager"), (152, "Blue_headed_Vireo"),
    (159, "Black_and_white_Warbler"), (164, "Cerulean_Warbler"), (166, "Golden_winged_Warbler"),
    (170, "Mourning_Warbler"), (176, "Prairie_Warbler"), (181, "Worm_eating_Warbler"),
    (185, "Bohemian_Waxwing"), (187, "American_Three_toed_Woodpecker"), (189, "Red_bellied_Woodpecker"),
    (191, "Red_headed_Woodpecker"), (194, "Cactus_Wren"), (198, "Rock_Wren"),
)
# the same species as fgvc's data.classes on the full CUB-200-2011 (0-based indices)
DATA_CLASSES = ",".join(str(cub_id - 1) for cub_id, _ in SPECIES)
SIZE = 227
JPEG_QUALITY = 95


def _species_name(cub_class: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black_footed_Albatross"``."""
    return cub_class.split(".", 1)[1] if "." in cub_class else cub_class


def check_out(out: Path) -> Path:
    """``out`` when birds50 may be written there: absent or an empty folder; UserError otherwise."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not an empty folder; pass a new folder (nothing "
                        "there is changed)")
    return out


def build(cub_root, out, size: int = SIZE, progress: bool = True) -> Path:
    """Write birds50 under ``out`` (``out/CUB_200_2011/...``) from CUB-200-2011 at ``cub_root``; returns
    ``out``. UserError, before anything is written, when ``out`` is not new or empty, ``size`` is not
    positive, or CUB-200-2011 lacks one of the species. Written into a temporary folder beside ``out``
    and moved into place at the end, so a failure leaves nothing half-written."""
    from PIL import Image

    from fgvc.data import build_dataset
    from fgvc.data.base import read_rgb

    out = check_out(out)
    if size < 1:
        raise UserError(f"--size {size} is not a positive number of pixels; use e.g. {SIZE}")
    train = build_dataset("cub200", cub_root, "train", val_fraction=0.0)
    test = build_dataset("cub200", cub_root, "test", val_fraction=0.0)
    index = {_species_name(n): i for i, n in enumerate(train.class_names)}
    missing = [name for _, name in SPECIES if name not in index]
    if missing:
        raise UserError(f"{cub_root} has no class {missing[0]!r} (and {len(missing) - 1} more of birds50's 50 "
                        "species); pass the root of CUB-200-2011 (`fgvc data prepare cub200 --root DIR`)")
    label = {index[name]: k for k, (_, name) in enumerate(SPECIES)}
    rows = [(s, 1) for s in train.samples if s.label in label] + [(s, 0) for s in test.samples if s.label in label]
    rows.sort(key=lambda r: (label[r[0].label], r[0].path.name))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        base = tmp / "CUB_200_2011"
        folders = [f"{k + 1:03d}.{name}" for k, (_, name) in enumerate(SPECIES)]
        for folder in folders:
            (base / "images" / folder).mkdir(parents=True)
        images, labels, split = [], [], []
        for n, (sample, is_train) in enumerate(tqdm(rows, desc="birds50", leave=False, disable=not progress), 1):
            rel = f"{folders[label[sample.label]]}/{sample.path.stem}.jpg"
            image = read_rgb(sample.path).resize((size, size), Image.BICUBIC)
            image.save(base / "images" / rel, "JPEG", quality=JPEG_QUALITY)
            images.append(f"{n} {rel}")
            labels.append(f"{n} {label[sample.label] + 1}")
            split.append(f"{n} {is_train}")
        for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                            ("train_test_split.txt", split),
                            ("classes.txt", [f"{k + 1} {f}" for k, f in enumerate(folders)])):
            (base / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["DATA_CLASSES", "SIZE", "SPECIES", "build", "check_out"]
