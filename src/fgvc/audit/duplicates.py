"""Near-duplicate and leakage audit: perceptual hashes of every image, pairs closer than a threshold.

Each image is hashed with several of imagehash's perceptual hashes (Buchner, `imagehash`: pHash, the
DCT hash of Zauner 2010; dHash, the gradient hash; wHash, the Haar wavelet hash), 64 bits each,
after decoding with fgvc's own ``read_rgb`` (EXIF orientation applied). Two images are a pair when the
sum of their Hamming distances is at most ``threshold`` bits.

Default: phash + dhash + whash (192 bits), threshold 20. Measured on generated birds and on
birds50 (docs/evaluation.md, "Data audits"): a resized copy or a JPEG re-encoded at
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


def pair_rows(h_a: np.ndarray, h_b: np.ndarray, threshold: int | None, e_a=None, e_b=None,
              similarity: float = 1.0, same: bool = False) -> list[tuple[int, int, int, float | None, str]]:
    """(i, j, distance in bits, cosine similarity or None, detector) for every pair of row i of ``a`` and
    row j of ``b`` found by the hashes ``h_a``, ``h_b`` (at most ``threshold`` bits apart; None: the
    hashes only measure) or by the embeddings ``e_a``, ``e_b`` (unit rows; cosine at least
    ``similarity``). detector is ``hash``, ``embedding`` or ``hash+embedding``; each pair carries both
    measures. ``same``: a and b are one set, each pair once (i < j). Most similar first when there are
    embeddings, else closest in bits first."""
    from fgvc.audit.embeddings import similar_pairs

    by_hash = close_pairs(h_a, h_b, threshold) if threshold is not None else []
    found: dict[tuple[int, int], tuple[str, float | None]] = {(i, j): ("hash", None) for i, j, _ in by_hash}
    if e_a is not None:
        for i, j, s in similar_pairs(e_a, e_b, similarity):
            found[(i, j)] = ("hash+embedding" if (i, j) in found else "embedding", s)
    rows = []
    for (i, j), (detector, s) in found.items():
        if same and i >= j:
            continue
        if e_a is not None and s is None:
            s = float(e_a[i] @ e_b[j])
        rows.append((i, j, int(np.count_nonzero(h_a[i] != h_b[j])), s, detector))
    if e_a is not None:
        return sorted(rows, key=lambda t: (-t[3], t[2], t[0], t[1]))
    return sorted(rows, key=lambda t: (t[2], t[0], t[1]))


def check_threshold(threshold: int | None, hashes: tuple[str, ...]) -> None:
    """UserError when ``threshold`` (bits; None: hash detector off) is outside 0..bits-1 of ``hashes``."""
    bits = HASH_BITS * len(hashes)
    if threshold is not None and not 0 <= threshold < bits:
        raise UserError(f"--threshold {threshold} is out of range; use 0..{bits - 1} bits for {len(hashes)} "
                        f"hash(es) of {HASH_BITS} bits")


def find_duplicates(name: str, root, against=(), threshold: int | None = DEFAULT_THRESHOLD,
                    hashes: tuple[str, ...] = DEFAULT_HASHES, val_fraction: float = 0.1, seed: int = 0,
                    progress: bool = False, features=None, similarity: float | None = None) -> dict:
    """Pairs of near-duplicates: each test image vs each training image of dataset ``name`` (kind
    ``train-test``: leakage), images within one split (kinds ``test-test``, ``train-train``), and each
    image of the dataset (train and test) vs each image of every ``against`` folder (kind ``against``).

    Two detectors: the perceptual hashes (at most ``threshold`` bits apart; None: off) and, when ``features`` is
    ``(model, image size)``, embeddings of that backbone (``fgvc.audit.embeddings``: cosine similarity
    at least ``similarity``, default ``DEFAULT_SIMILARITY``); a pair found by either is reported with both
    measures. Returns ``{"pairs": [row, ...], "counts": {...}, "hashes", "threshold", "bits",
    "similarity"}``; a row holds kind, image, split, label, match, match_source, match_label, distance
    (bits), similarity (cosine, None without features), detector."""
    from fgvc.audit import embeddings

    hashes = parse_hashes(hashes)
    bits = HASH_BITS * len(hashes)
    if threshold is None and features is None:
        raise UserError("no near-duplicate detector left: the hash detector is off and no backbone gives "
                        "embeddings; pass --detectors hash, or --model NAME for the embedding detector")
    check_threshold(threshold, hashes)
    similarity = embeddings.check_similarity(embeddings.DEFAULT_SIMILARITY if similarity is None else similarity)
    folders = [(Path(f).expanduser(), folder_images(f)) for f in against]  # bad folders fail before any hashing
    train, test, class_names = dataset_splits(name, root, val_fraction, seed)

    def measure(paths, desc):
        h = hash_files(paths, hashes, progress, f"hashing {desc}")
        e = embeddings.embed_files(paths, *features, progress=progress, desc=f"embedding {desc}") \
            if features is not None else None
        return h, e

    m_train = measure([s.path for s in train], "train")
    m_test = measure([s.path for s in test], "test")
    rows = []

    def add(kind, samples, split, m_a, m_b, matches, source, match_labels, same=False):
        for i, j, d, s, detector in pair_rows(m_a[0], m_b[0], threshold, m_a[1], m_b[1], similarity, same):
            rows.append({"kind": kind, "image": str(samples[i].path), "split": split,
                         "label": class_names[samples[i].label], "match": str(matches[j]), "match_source": source,
                         "match_label": match_labels[j], "distance": d,
                         "similarity": s, "detector": detector})

    train_labels = [class_names[s.label] for s in train]
    add("train-test", test, "test", m_test, m_train, [s.path for s in train], "train", train_labels)
    for split, samples, m in (("test", test, m_test), ("train", train, m_train)):
        # within one split: not leakage, but a repeated image counts twice in that split's numbers
        add(f"{split}-{split}", samples, split, m, m, [s.path for s in samples], split,
            [class_names[s.label] for s in samples], same=True)
    counts = {"train": len(train), "test": len(test)}
    for folder, files in folders:
        m_other = measure(files, folder.name)
        counts[str(folder)] = len(files)
        for split, samples, m in (("test", test, m_test), ("train", train, m_train)):
            add("against", samples, split, m, m_other, files, str(folder), [""] * len(files))
    return {"pairs": rows, "counts": counts, "hashes": list(hashes), "threshold": threshold, "bits": bits,
            "similarity": similarity if features is not None else None}


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
           "check_threshold", "find_duplicates", "folder_images", "hash_files", "image_bits", "pair_rows", "parse_hashes"]
