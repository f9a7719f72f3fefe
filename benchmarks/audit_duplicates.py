"""Precision and recall of `fgvc data audit`'s two near-duplicate detectors on copies planted into a real
training set: perceptual hashes (``fgvc.audit.duplicates``) and a pretrained backbone's flip-invariant
embeddings (``fgvc.audit.embeddings``).

    python benchmarks/audit_duplicates.py --data DIR --weights mobilenet_v2_1.0_224_quant.tflite

``--data`` is a dataset in the CUB-200-2011 layout (``DIR/CUB_200_2011/...``; birds50, see
docs/datasets.md). Into a temporary folder-layout copy of it (links to the original files) the script
plants, for ``--sources`` test images of each half of the classes, one copy of each kind below into the
training split: even-numbered sources into their own class, odd-numbered ones into another class of
the same half (a leak that is a label error too). Every image is hashed and embedded once, with the
audit's own functions; ``pair_rows`` (the audit's union of both detectors) then lists the train-test
pairs at each threshold. A pair is true when it joins a test image and a copy planted from it; any
other pair is false (pairs between two original photographs are listed for a look by eye, since a
dataset may hold real duplicates of its own).

The classes are split in two halves (even and odd class indices): the thresholds are calibrated on the
first half's images and copies, as the loosest setting with no false pair among them (hashes) or the
loosest similarity whose precision there is at least 0.95 (embeddings), and precision and recall are
reported on the second half, which calibration never saw. Precision depends on how many copies a
dataset holds; false pairs per 10^6 compared pairs do not, and are reported beside it. With ``--cli`` the script also
runs `fgvc data audit` at its default thresholds on the whole planted folder and scores its pairs.csv.

Writes a Markdown report (``--out``, default benchmarks/results/audit_duplicates.md) and the raw
measures (``--work``/measures.npz); ``--reuse`` analyses those measures of an earlier run in the same
``--work`` folder again (the planted copies are read back from their file names) without recomputing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from fgvc.audit import duplicates, embeddings
from fgvc.data import build_dataset


def _crop(image: Image.Image, keep: float, rng: np.random.Generator) -> Image.Image:
    """``keep`` of each side, at a random position."""
    w, h = image.size
    cw, ch = round(keep * w), round(keep * h)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """torchvision's ColorJitter(brightness=0.3, contrast=0.3, saturation=0.5, hue=0.05) with drawn factors,
    each at least half its range from 1 (or 0 for hue), so every copy is visibly changed."""
    def factor(r):
        return 1 + rng.choice([-1, 1]) * rng.uniform(r / 2, r)
    image = TF.adjust_brightness(image, factor(0.3))
    image = TF.adjust_contrast(image, factor(0.3))
    image = TF.adjust_saturation(image, factor(0.5))
    return TF.adjust_hue(image, float(rng.choice([-1, 1]) * rng.uniform(0.025, 0.05)))


# kind -> (function (PIL image, rng) -> PIL image, JPEG quality); None: a byte copy of the file
KINDS = {
    "exact": None,
    "resized to half the side": (lambda im, rng: im.resize((im.width // 2, im.height // 2), Image.BICUBIC), 90),
    "re-encoded, JPEG quality 30": (lambda im, rng: im, 30),
    "cropped to 90% of each side": (lambda im, rng: _crop(im, 0.9, rng), 90),
    "cropped to 80%": (lambda im, rng: _crop(im, 0.8, rng), 90),
    "cropped to 70%": (lambda im, rng: _crop(im, 0.7, rng), 90),
    "cropped to 60%": (lambda im, rng: _crop(im, 0.6, rng), 90),
    "mirrored": (lambda im, rng: ImageOps.mirror(im), 90),
    "mirrored, cropped to 80%": (lambda im, rng: _crop(ImageOps.mirror(im), 0.8, rng), 90),
    "colour-jittered": (_jitter, 90),
    "grey": (lambda im, rng: im.convert("L").convert("RGB"), 90),
    "mild crop (92%), resized to 80%, JPEG 60": (
        lambda im, rng: (c := _crop(im, 0.92, rng)).resize((round(0.8 * c.width), round(0.8 * c.height)),
                                                          Image.BICUBIC), 60),
}


def plant(data: Path, work: Path, sources: int, seed: int):
    """A folder-layout copy of ``data`` under ``work/data`` with planted copies in train; returns
    (root, {copy path: (source test path, kind)} with resolved paths, class names, halves: class index
    -> 0 or 1)."""
    train = build_dataset("cub200", data, "train", val_fraction=0.0)
    test = build_dataset("cub200", data, "test", val_fraction=0.0)
    names = train.class_names
    root = work / "data"
    for split, ds in (("train", train), ("test", test)):
        for s in ds.samples:
            dest = root / split / names[s.label] / s.path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(s.path.resolve())
    rng = np.random.default_rng(seed)
    half = {c: c % 2 for c in range(len(names))}
    planted = {}
    for h in (0, 1):
        pool = [s for s in test.samples if half[s.label] == h]
        chosen = [pool[i] for i in rng.choice(len(pool), size=sources, replace=False)]
        for k, s in enumerate(chosen):
            others = [c for c in range(len(names)) if half[c] == h and c != s.label]
            dest_class = s.label if k % 2 == 0 else int(rng.choice(others))
            image = Image.open(s.path).convert("RGB")
            for n, (kind, how) in enumerate(KINDS.items()):
                path = root / "train" / names[dest_class] / f"planted_{s.path.stem}_{n:02d}.jpg"
                if how is None:
                    shutil.copyfile(s.path, path)
                else:
                    fn, quality = how
                    fn(image, rng).save(path, "JPEG", quality=quality)
                planted[path.resolve()] = (s.path.resolve(), kind)
    return root, planted, names, half


def measure(root: Path, model, size: int):
    """Hash bits and embeddings of every train and test image of the folder dataset at ``root``, with
    the audit's own functions; (train samples, test samples, bits, embeddings, seconds of each)."""
    train, test, _ = duplicates.dataset_splits("folder", root, val_fraction=0.1, seed=0)
    paths = [s.path for s in train] + [s.path for s in test]
    t = time.perf_counter()
    bits = duplicates.hash_files(paths, progress=True)
    t_hash = time.perf_counter() - t
    t = time.perf_counter()
    emb = embeddings.embed_files(paths, model, size, progress=True)
    t_embed = time.perf_counter() - t
    return train, test, bits, emb, t_hash, t_embed


def score(rows, truth: dict, kinds: dict, n_pairs: int) -> dict:
    """Precision, recall (overall and per kind) and false pairs of ``rows`` (i, j, ...) against ``truth``
    ({(i, j): kind})."""
    found = {(i, j) for i, j, *_ in rows}
    hits = found & truth.keys()
    per_kind = {k: sum(truth[p] == k for p in hits) / max(1, n) for k, n in kinds.items()}
    return {"pairs": len(found), "true": len(hits), "false": len(found) - len(hits),
            "precision": len(hits) / len(found) if found else float("nan"), "recall": len(hits) / len(truth),
            "per_kind": per_kind, "false_per_million": 1e6 * (len(found) - len(hits)) / n_pairs}


def half_problem(train, test, bits, emb, planted, half, h):
    """Indices and ground truth of the train-test comparison restricted to the classes of half ``h``."""
    n_train = len(train)
    ti = [i for i, s in enumerate(test) if half[s.label] == h]
    ri = [j for j, s in enumerate(train) if half[s.label] == h]
    t_pos = {test[i].path.resolve(): k for k, i in enumerate(ti)}
    r_pos = {train[j].path.resolve(): k for k, j in enumerate(ri)}
    truth = {}
    for copy, (source, kind) in planted.items():
        if copy in r_pos and source in t_pos:
            truth[(t_pos[source], r_pos[copy])] = kind
    return (bits[[n_train + i for i in ti]], bits[ri], emb[[n_train + i for i in ti]], emb[ri], truth,
            [test[i] for i in ti], [train[j] for j in ri])


def sweep(prob, thresholds, similarities):
    """{("hash", t) or ("embedding", s): score} over the hash thresholds and the similarities alone."""
    hb_t, hb_r, e_t, e_r, truth, *_ = prob
    kinds = {k: sum(v == k for v in truth.values()) for k in KINDS}
    n = len(hb_t) * len(hb_r)
    out = {}
    for t in thresholds:
        out[("hash", t)] = score(duplicates.close_pairs(hb_t, hb_r, t), truth, kinds, n)
    for s in similarities:
        out[("embedding", s)] = score(embeddings.similar_pairs(e_t, e_r, s), truth, kinds, n)
    return out


def calibrate(results, thresholds, similarities, precision: float = 0.95) -> tuple[int, float]:
    """The loosest hash threshold with no false pair, and the loosest similarity with at least
    ``precision``, on the calibration half."""
    t = max([t for t in thresholds if results[("hash", t)]["false"] == 0], default=min(thresholds))
    s = min([s for s in similarities if results[("embedding", s)]["precision"] >= precision],
            default=max(similarities))
    return t, s


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in info]
    return f"{model} ({', '.join(flags)})" if flags else model


def recover_planted(root: Path) -> dict:
    """{copy path: (source test path, kind)} (resolved) from the names ``plant`` gave the copies."""
    tests = {p.stem: p.resolve() for p in (root / "test").glob("*/*.jpg")}
    planted = {}
    for path in (root / "train").glob("*/planted_*.jpg"):
        stem, n = path.stem[len("planted_"):].rsplit("_", 1)
        planted[path.resolve()] = (tests[stem], list(KINDS)[int(n)])
    return planted


def table(results: dict, keys: list, label) -> list[str]:
    lines = ["| detector | " + " | ".join(label(k) for k in keys) + " |",
             "| --- | " + " | ".join("---" for _ in keys) + " |"]
    for kind in KINDS:
        lines.append(f"| recall: {kind} | " + " | ".join(f"{results[k]['per_kind'][kind]:.2f}" for k in keys) + " |")
    for what in ("recall", "precision"):
        lines.append(f"| **{what}** | " + " | ".join(f"**{results[k][what]:.3f}**" for k in keys) + " |")
    lines.append("| false pairs per 10^6 compared | " + " | ".join(f"{results[k]['false_per_million']:.1f}"
                                                               for k in keys) + " |")
    lines.append("| pairs found (true + false) | " + " | ".join(f"{results[k]['true']} + {results[k]['false']}"
                                                          for k in keys) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset root in the CUB-200-2011 layout")
    p.add_argument("--model", default="tf_mobilenetv2_100")
    p.add_argument("--weights", required=True, help="pretrained weights for --model (e.g. a .tflite file)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--sources", type=int, default=30, help="test images copied, per half of the classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", help="working folder (default: a new temporary folder)")
    p.add_argument("--out", default="benchmarks/results/audit_duplicates.md")
    p.add_argument("--cli", action="store_true", help="also run `fgvc data audit` at its defaults and score it")
    p.add_argument("--reuse", action="store_true", help="analyse the measures of an earlier run in --work again")
    args = p.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="fgvc-audit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source, size = f"{args.model} ({Path(args.weights).name})", args.image_size
    if args.reuse:
        root = work / "data"
        planted = recover_planted(root)
        train, test, names = duplicates.dataset_splits("folder", root, val_fraction=0.1, seed=0)
        saved = np.load(work / "measures.npz")
        assert list(saved["paths"]) == [str(s.path) for s in train + test], "the dataset changed since"
        bits, emb = saved["bits"], torch.from_numpy(saved["emb"])
        t_hash, t_embed = float(saved["seconds"][0]), float(saved["seconds"][1])
        half = {c: c % 2 for c in range(len(names))}
    else:
        root, planted, names, half = plant(Path(args.data).expanduser(), work, args.sources, args.seed)
        model, size, source = embeddings.backbone(None, args.model, args.weights, args.image_size)
        train, test, bits, emb, t_hash, t_embed = measure(root, model, size)
        np.savez(work / "measures.npz", bits=bits, emb=emb.numpy(), seconds=np.array([t_hash, t_embed]),
                 paths=np.array([str(s.path) for s in train + test]))
    thresholds = list(range(10, 62, 2))
    similarities = [round(x, 3) for x in np.arange(0.70, 0.991, 0.01)]
    cal = sweep(half_problem(train, test, bits, emb, planted, half, 0), thresholds, similarities)
    t_cal, s_cal = calibrate(cal, thresholds, similarities)
    prob = half_problem(train, test, bits, emb, planted, half, 1)
    held = sweep(prob, sorted({duplicates.DEFAULT_THRESHOLD, t_cal}),
                 sorted({embeddings.DEFAULT_SIMILARITY, s_cal}))
    hb_t, hb_r, e_t, e_r, truth, tests, trains = prob
    kinds = {k: sum(v == k for v in truth.values()) for k in KINDS}
    n = len(hb_t) * len(hb_r)
    both = {}
    for t, s in sorted({(duplicates.DEFAULT_THRESHOLD, embeddings.DEFAULT_SIMILARITY), (t_cal, s_cal)}):
        rows = duplicates.pair_rows(hb_t, hb_r, t, e_t, e_r, s)
        both[("both", t, s)] = score(rows, truth, kinds, n)
    false_rows = [r for r in duplicates.pair_rows(hb_t, hb_r, t_cal, e_t, e_r, s_cal) if (r[0], r[1]) not in truth]
    seconds = time.perf_counter() - t0
    where = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, load average " \
            f"{os.getloadavg()[0]:.1f} at the end"
    timing = (f"measures of an earlier run in the same folder (hashing {len(bits)} images took {t_hash:.0f} s, "
              f"embedding them {t_embed:.0f} s at {size} px), analysed again in {seconds:.0f} s" if args.reuse else
              f"{seconds / 60:.1f} min in all (hashing {len(bits)} images {t_hash:.0f} s, embedding them "
              f"{t_embed:.0f} s at {size} px)")
    lines = [f"# Near-duplicate detectors on planted copies ({datetime.date.today()})", "",
             f"`python benchmarks/audit_duplicates.py --data BIRDS50 --weights {Path(args.weights).name} "
             f"--sources {args.sources} --seed {args.seed}{' --reuse' if args.reuse else ''}`; {where}; {timing}.", "",
             f"Backbone: {source}. {len(planted)} copies of {2 * args.sources} test images planted in train "
             f"({len(KINDS)} kinds; half of the sources into another class). Calibration half: "
             f"{sum(half[s.label] == 0 for s in test)} test x {sum(half[s.label] == 0 for s in train)} train images; "
             f"held-out half: {len(hb_t)} x {len(hb_r)} ({n} pairs, {len(truth)} planted).", "",
             f"Calibrated on the first half: hash threshold {t_cal} bits (loosest with no false pair), similarity "
             f"{s_cal} (loosest with precision >= 0.95).", "",
             "## Held-out half", ""]
    keys = list(held) + list(both)
    lines += table({**held, **both}, keys, lambda k: f"hash <= {k[1]}" if k[0] == "hash" else
                   f"cosine >= {k[1]}" if k[0] == "embedding" else f"either ({k[1]} bits, {k[2]})")
    lines += ["", "False pairs on the held-out half, both detectors at the calibrated thresholds:", ""]
    lines += [f"- `{tests[i].path.name}` (test, {names[tests[i].label]}) ~ `{trains[j].path.name}` (train, "
              f"{names[trains[j].label]}): {d} bits, cosine {s:.3f}, {det}" for i, j, d, s, det in false_rows[:30]]
    lines += ["", "## Calibration half: the sweep", ""]
    sweep_keys = [("hash", t) for t in thresholds if t % 4 == 0 and t <= 48] + \
                 [("embedding", s) for s in similarities if round(s * 100) % 2 == 0]
    lines += table(cal, sweep_keys, lambda k: f"{'<=' if k[0] == 'hash' else '>='} {k[1]}")
    if args.cli:
        lines += ["", *run_cli(root, args, planted)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {out}; work folder {work}")


def run_cli(root: Path, args, planted: dict) -> list[str]:
    """`fgvc data audit folder --root ROOT --model ... --weights ...` at the default thresholds, scored on every
    planted copy (both halves)."""
    import csv

    from fgvc.cli import main as fgvc_main

    out = root.parent / "audit"
    argv = ["data", "audit", "folder", "--root", str(root), "--what", "duplicates", "--model", args.model,
            "--weights", args.weights, "--image-size", str(args.image_size), "--out", str(out), "--quiet"]
    t = time.perf_counter()
    assert fgvc_main(argv) == 0
    seconds = time.perf_counter() - t
    with open(out / "pairs.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "train-test"]
    found = {(Path(r["image"]).resolve(), Path(r["match"]).resolve()) for r in rows}
    truth = {(src, copy): kind for copy, (src, kind) in planted.items()}
    hits = found & truth.keys()
    lines = [f"## `fgvc data audit` at its defaults, both halves ({seconds:.0f} s)", "",
             f"`fgvc data audit folder --root PLANTED --what duplicates --model {args.model} --weights "
             f"{Path(args.weights).name}`: {len(rows)} train-test pairs, {len(hits)} of {len(truth)} planted copies "
             f"found (recall {len(hits) / len(truth):.3f}), {len(found) - len(hits)} other pairs "
             f"(precision {len(hits) / max(1, len(found)):.3f}).", "", "| kind | found |", "| --- | --- |"]
    for kind in KINDS:
        n = sum(v == kind for v in truth.values())
        lines.append(f"| {kind} | {sum(truth[p] == kind for p in hits)} / {n} |")
    return lines


if __name__ == "__main__":
    main()
