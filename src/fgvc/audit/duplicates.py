"""Near-duplicate and leakage audit: perceptual hashes of every image, pairs closer than a threshold.

Each image is hashed with several of imagehash's perceptual hashes (Buchner, `imagehash`: pHash, the
DCT hash of Zauner 2010; dHash, the gradient hash; wHash, the Haar wavelet hash), 64 bits each,
after decoding with fgvc's own ``read_rgb`` (EXIF orientation applied). Two images are a pair when the
sum of their Hamming distances is at most ``threshold`` bits.

Default: phash + dhash + whash (192 bits), threshold 20. Measured on generated birds and on
../shared/data/birds50 (docs/evaluation.md, "Data audits"): a resized copy or a JPEG re-encoded at
quality 30 lies at most 16 bits away (median 0-5), a copy with 2% / 3% / 4% cropped from every side
6-12 / 13-17 / 19-22 bits (medians), while distinct images lie 27 or more bits apart (46 or more among
generated birds, whose classes differ mostly in colour, which a grey-level hash does not see). Raise
the threshold to catch heavier crops at the price of false pairs; every pair is shown in a gallery to
be checked by eye.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fgvc.errors import UserError

DEFAULT_HASHES = ("phash", "dhash", "whash")
DEFAULT_THRESHOLD = 20
HASH_BITS = 64  # hash_size 8: 8 x 8 bits per hash
DECODE_SIDE = 128  # JPEGs are decoded at the smallest DCT scale >= this; every hash works on <= 64 px


def _hash_functions() -> dict:
    from fgvc.audit import require

    imagehash = require("imagehash")
    return {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash,
            # a fixed wavelet scale: by default whash scales with the image size, so a resized copy would drift
            "whash": functools.partial(imagehash.whash, image_scale=64)}


def parse_hashes(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"phash,dhash"`` -> ("phash", "dhash"); UserError on an unknown or empty list."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    known = _hash_functions()
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise UserError(f"unknown hash {bad[0] if bad else spec!r} in --hashes; choose a comma list of "
                        f"{', '.join(sorted(known))}")
    return tuple(dict.fromkeys(names))


def image_bits(image, hashes: tuple[str, ...] = DEFAULT_HASHES) -> np.ndarray:
    """The concatenated hashes of a PIL image: bool array of 64 * len(hashes) bits."""
    fns = _hash_functions()
    return np.concatenate([np.asarray(fns[h](image).hash, dtype=bool).ravel() for h in hashes])


def hash_files(paths: list[Path], hashes: tuple[str, ...] = DEFAULT_HASHES, progress: bool = False,
               desc: str = "hashing") -> np.ndarray:
    """(N, 64 * len(hashes)) bool array, one row per file; an unreadable file raises UnreadableImage naming it."""
    from fgvc.data.base import read_rgb

    rows = [image_bits(read_rgb(p, DECODE_SIDE), hashes)
            for p in tqdm(paths, desc=desc, leave=False, disable=not progress)]
    return np.stack(rows) if rows else np.zeros((0, HASH_BITS * len(hashes)), dtype=bool)


def close_pairs(a: np.ndarray, b: np.ndarray, threshold: int, chunk: int = 2048) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) for every row i of ``a`` and j of ``b`` at most ``threshold`` bits apart,
    closest first. ``a`` (N, B) and ``b`` (M, B) bool; memory is chunk x M floats at a time."""
    out = []
    bf = b.astype(np.float32)
    for start in range(0, len(a), chunk):
        af = a[start:start + chunk].astype(np.float32)
        # differing bits = a and not b, plus b and not a
        d = np.rint(af @ (1.0 - bf).T + (1.0 - af) @ bf.T).astype(np.int64)
        for i, j in zip(*np.nonzero(d <= threshold)):
            out.append((start + int(i), int(j), int(d[i, j])))
    return sorted(out, key=lambda t: (t[2], t[0], t[1]))


def folder_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively); UserError when it is missing or holds none."""
    from fgvc.data.folder import image_files

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"--against folder {folder} does not exist or is not a folder; pass a folder of images")
    files = image_files(folder)
    if not files:
        raise UserError(f"--against folder {folder} holds no image files; pass a folder of images")
    return files


def dataset_splits(name: str, root, val_fraction: float = 0.1, seed: int = 0):
    """(train samples including val, test samples, class names) of a registered dataset: the audit
    compares the whole official training set, since val is carved from it."""
    from fgvc.data import build_dataset

    train = build_dataset(name, root, "train", val_fraction=val_fraction, seed=seed)
    val = build_dataset(name, root, "val", val_fraction=val_fraction, seed=seed)
    test = build_dataset(name, root, "test", val_fraction=val_fraction, seed=seed)
    return train.samples + val.samples, test.samples, train.class_names


def find_duplicates(name: str, root, against=(), threshold: int = DEFAULT_THRESHOLD,
                    hashes: tuple[str, ...] = DEFAULT_HASHES, val_fraction: float = 0.1, seed: int = 0,
                    progress: bool = False) -> dict:
    """Pairs of near-duplicates: each test image vs each training image of dataset ``name`` (kind
    ``train-test``: leakage), images within one split (kinds ``test-test``, ``train-train``), and each
    image of the dataset (train and test) vs each image of every ``against`` folder (kind ``against``). Returns ``{"pairs": [row, ...], "counts": {...}, "hashes", "threshold",
    "bits"}``; a row holds kind, image, split, label, match, match_source, match_label, distance (bits)."""
    hashes = parse_hashes(hashes)
    bits = HASH_BITS * len(hashes)
    if not 0 <= threshold < bits:
        raise UserError(f"--threshold {threshold} is out of range; use 0..{bits - 1} bits for {len(hashes)} "
                        f"hash(es) of {HASH_BITS} bits")
    folders = [(Path(f).expanduser(), folder_images(f)) for f in against]  # bad folders fail before any hashing
    train, test, class_names = dataset_splits(name, root, val_fraction, seed)
    h_train = hash_files([s.path for s in train], hashes, progress, "hashing train")
    h_test = hash_files([s.path for s in test], hashes, progress, "hashing test")
    rows = []

    def row(kind, sample, split, match, source, match_label, d):
        return {"kind": kind, "image": str(sample.path), "split": split, "label": class_names[sample.label],
                "match": str(match), "match_source": source, "match_label": match_label, "distance": d}

    for i, j, d in close_pairs(h_test, h_train, threshold):
        rows.append(row("train-test", test[i], "test", train[j].path, "train", class_names[train[j].label], d))
    for split, samples, h in (("test", test, h_test), ("train", train, h_train)):
        # within one split: not leakage, but a repeated image counts twice in that split's numbers
        for i, j, d in close_pairs(h, h, threshold):
            if i < j:
                rows.append(row(f"{split}-{split}", samples[i], split, samples[j].path, split,
                                class_names[samples[j].label], d))
    counts = {"train": len(train), "test": len(test)}
    for folder, files in folders:
        h_other = hash_files(files, hashes, progress, f"hashing {folder.name}")
        counts[str(folder)] = len(files)
        for split, samples, h in (("test", test, h_test), ("train", train, h_train)):
            for i, j, d in close_pairs(h, h_other, threshold):
                rows.append(row("against", samples[i], split, files[j], str(folder), "", d))
    return {"pairs": rows, "counts": counts, "hashes": list(hashes), "threshold": threshold, "bits": bits}


def accuracy_without(run_dir, name: str, root, excluded: set[str], val_fraction: float = 0.1, seed: int = 0,
                     progress: bool = False) -> dict:
    """Test accuracy of a run's best checkpoint on dataset ``name``'s test split, with every image and
    without the test images whose path is in ``excluded``; the model and pipeline are fgvc eval's
    (``api.load``, ``eval_transform``, ``fgvc.train.evaluate``). Fractions in [0, 1]."""
    import torch
    from torch.utils.data import DataLoader

    from fgvc import api
    from fgvc.data import build_dataset
    from fgvc.train import evaluate

    run = api.Run(run_dir)
    run_dir, cfg, class_names = run.dir, run.config, run.class_names
    if not (run_dir / "checkpoints" / "best.safetensors").is_file():
        raise UserError(f"run {run_dir} has no checkpoints/best.safetensors; pass a finished run of `fgvc train`")
    model = run.model()
    test = build_dataset(name, root, "test", run.eval_transform, val_fraction, seed)
    if len(test.class_names) != len(class_names):
        raise UserError(f"run {run_dir} has {len(class_names)} classes but {name} at {root} has "
                        f"{len(test.class_names)}; audit the dataset the run was trained on")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loader = DataLoader(test, batch_size=cfg.train.batch_size * 2, num_workers=0)
    r = evaluate(model.to(device), loader, device=device, progress=progress, desc="test", predictions=True)
    correct = (r["predicted"] == r["labels"]).numpy()
    keep = np.array([str(s.path) not in excluded for s in test.samples])
    return {"run": str(run_dir), "test_acc": float(correct.mean()) if len(correct) else float("nan"),
            "test_images": int(len(correct)), "test_acc_without_duplicates":
                float(correct[keep].mean()) if keep.any() else float("nan"),
            "test_images_without_duplicates": int(keep.sum()), "duplicated_test_images": int((~keep).sum())}


__all__ = ["DEFAULT_HASHES", "DEFAULT_THRESHOLD", "accuracy_without", "close_pairs", "dataset_splits",
           "find_duplicates", "folder_images", "hash_files", "image_bits", "parse_hashes"]
