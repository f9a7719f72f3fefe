"""fgvc's training loop against timm's own ``train.py``: same images, model, batch, resolution,
precision and epochs, end-to-end img/s, one run after the other.

    .venv/bin/python benchmarks/vs_timm_train.py --timm-train TIMM_CHECKOUT/train.py \\
        --root BIRDS50 --model resnet18 --size 96 --batch 32 --precision fp32 \\
        --epochs 2 --workers 2 --out benchmarks/results/vs_timm_train.md

``train.py`` is not in timm's wheel: it comes from a checkout of huggingface/pytorch-image-models
outside this repository (never copied into it). ``--timm-launcher`` runs it through a wrapper (for
example one that lets a CUDA-only version of the script run on a CPU; say what it changes with
``--note``); ``--timm-commit`` records the checkout's commit.

Variants: ``--fgvc-variant TAG:KEY=VALUE[,KEY=VALUE]`` adds an fgvc run with extra overrides (e.g.
``cache:data.cache=on``), ``--timm-variant TAG:ARG[,ARG]`` a timm run with extra train.py arguments
(e.g. ``channels-last:--channels-last``); each fgvc row is compared with the fastest timm row of its
round. fgvc runs its defaults, ``train.channels_last=auto`` among them (channels-last weights for a CNN
on a CPU, and on a GPU in mixed precision), where timm's train.py needs ``--channels-last``: pass that
timm variant for a like-for-like row, or ``--fgvc-variant nchw:train.channels_last=false``. ``--repeat N`` runs every setting N times, interleaved, since this machine's speed drifts.

The image folder is one CUB-layout dataset (``--root``). fgvc trains on its ``train`` split
(official train minus the seeded, stratified ``data.val_fraction`` that becomes ``val``) and
validates on ``val`` after every epoch; this script links exactly those images into an ImageFolder
view (``<view>/train/<class>/``, ``<view>/validation/<class>/``) for timm, so both train on the same
images and validate on the same images. fgvc also scores the test split once at the end (in its
process wall time, not in its epochs).

Settings that match: model (from scratch), classes, input size, batch (train and validation),
epochs, loader workers (``--workers``, both tools; ``--fgvc-auto-workers`` adds an fgvc run with
its own choice, ``data.num_workers=-1``), precision (fp32, or bf16 autocast: fgvc
``train.precision=bf16-mixed``, timm ``--amp --amp-dtype bfloat16``), AdamW with fgvc's default lr
and weight decay, the same multistep schedule and no warm-up, no Mixup/CutMix. Augmentation is each
tool's own: fgvc ``aug.geometric=true`` (random-resized-crop scale 0.35-1, flip, rotation up to 15
degrees); timm's train.py defaults (random-resized-crop scale 0.08-1 with a random interpolation,
flip, colour jitter 0.4, label smoothing 0.1). timm runs with ``--no-prefetcher`` (its prefetcher
is a CUDA-stream device copy) and ``--log-interval 1``.

Timing. timm: its own per-update timer (``Time: <s>s, <img/s>/s`` in every ``Train:`` line; the
first update of an epoch includes the loader's start) and validation timer (``Test:`` lines).
fgvc: ``fgvc train`` runs in a Python process that times each call of
``fgvc.train.loop.train_one_epoch`` (the interval ``fit`` itself sums into metrics.json
``train_seconds``; the sum is checked against it), plus metrics.json ``train_images_per_second``
and history.csv ``seconds`` (an epoch with its validation). Reported per tool: train img/s of the
first epoch and of the later ones, seconds per epoch with validation, the process wall time; and
fgvc / timm for each.

Appends a Markdown section (machine, date, load, commands, versions, table) to ``--out``. Before
each run it waits (up to ``--wait-load`` s) for the 1-minute load average to fall below
``--max-load``. Run it alone: another heavy job on the same cores slows both far more than 2x.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN_LINE = re.compile(r"Train: (\d+) \[\s*(\d+)/(\d+) .*?Time: ([\d.]+)s,\s+([\d.]+)/s")
TEST_LINE = re.compile(r"Test: \[\s*(\d+)/(\d+)\]\s+Time: ([\d.]+) ")
FGVC_EPOCH = "FGVC_EPOCH_TRAIN "

# fgvc's CLI in a process that prints the seconds and images of each train_one_epoch call
FGVC_TIMED = f"""
import json, sys, time
import fgvc.train.loop as loop
from fgvc.cli import main
inner = loop.train_one_epoch
def timed(*a, **k):
    t0 = time.perf_counter()
    out = inner(*a, **k)
    print({FGVC_EPOCH!r} + json.dumps({{"seconds": time.perf_counter() - t0, "images": out[2]}}),
          file=sys.stderr, flush=True)
    return out
loop.train_one_epoch = timed
sys.exit(main(sys.argv[1:]))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timm-train", required=True, type=Path, help="timm's train.py, from a checkout outside the repo")
    p.add_argument("--timm-launcher", type=Path, default=None,
                   help="a script that runs train.py with the same arguments (e.g. a CPU shim); default: train.py")
    p.add_argument("--timm-commit", default="unknown", help="the commit of the checkout train.py comes from")
    p.add_argument("--root", required=True, help="CUB-layout dataset root (e.g. birds50, `fgvc data birds50`)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="loader workers of both tools")
    p.add_argument("--fgvc-auto-workers", action="store_true", help="also run fgvc with data.num_workers=-1")
    p.add_argument("--fgvc-variant", action="append", default=[], metavar="TAG:KEY=VALUE[,KEY=VALUE]",
                   help="also run fgvc with these extra overrides, e.g. 'cache:data.cache=on' (repeatable)")
    p.add_argument("--timm-variant", action="append", default=[], metavar="TAG:ARG[,ARG]",
                   help="also run timm's train.py with these extra arguments, e.g. 'channels-last:--channels-last'")
    p.add_argument("--repeat", type=int, default=1,
                   help="run timm and every fgvc setting this many times, interleaved (this machine's speed drifts)")
    p.add_argument("--classes", default="", help="fgvc data.classes subset for both tools (e.g. 0-1 for a smoke test)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fgvc data.val_fraction (val = timm's validation)")
    p.add_argument("--work-dir", type=Path, default=None, help="view and run outputs (default: a temp folder, removed)")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--wait-load", type=float, default=600.0)
    p.add_argument("--note", action="append", default=[], help="a line for the results (shims, caveats)")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def build_view(args, view: Path) -> tuple[int, int, int]:
    """Symlink fgvc's train and val images of ``args.root`` into an ImageFolder tree under ``view``;
    returns (classes, train images, validation images)."""
    from fgvc.data import build_dataset

    counts = []
    for split, folder in (("train", "train"), ("val", "validation")):
        ds = build_dataset("cub200", args.root, split, None, args.val_fraction, 0, args.classes)
        for s in ds.samples:
            target = view / folder / f"{s.label:03d}_{ds.class_names[s.label]}" / Path(s.path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(s.path).resolve())
        counts.append((len(ds.class_names), len(ds.samples)))
    return counts[0][0], counts[0][1], counts[1][1]


def wait_for_quiet(args) -> float:
    """The 1-minute load average once it is below --max-load, or when --wait-load s have passed."""
    deadline = time.monotonic() + args.wait_load
    while True:
        load = os.getloadavg()[0]
        if load <= args.max_load or time.monotonic() >= deadline:
            return load
        print(f"load {load:.2f} > {args.max_load}: waiting 30 s", flush=True)
        time.sleep(30)


def run_logged(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` to completion with stdout+stderr into ``log``; wall seconds. Exits on failure."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{shlex.join(cmd)} failed (exit {done.returncode}); last lines of {log}:\n"
                 + "\n".join(log.read_text().splitlines()[-25:]))
    return wall


def timm_command(args, view: Path, num_classes: int, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    from fgvc.config import TrainConfig

    t = TrainConfig()
    script = args.timm_launcher or args.timm_train
    cmd = [sys.executable, str(script), str(view), "--model", args.model, "--num-classes", str(num_classes),
           "--input-size", "3", str(args.size), str(args.size), "-b", str(args.batch), "-vb", str(args.batch),
           "--epochs", str(args.epochs), "-j", str(args.workers), "--opt", "adamw", "--lr", str(t.lr),
           "--weight-decay", str(t.weight_decay), "--sched", "multistep",
           "--decay-milestones", *map(str, t.milestones), "--decay-rate", str(t.gamma), "--warmup-epochs", "0",
           "--no-prefetcher", "--log-interval", "1", "--seed", "0", "--checkpoint-hist", "1",
           "--output", str(out), "--experiment", "run"]
    if args.precision == "bf16":
        cmd += ["--amp", "--amp-dtype", "bfloat16"]
    return cmd + list(extra)


def parse_timm_log(text: str, epochs: int) -> list[dict]:
    """Per epoch: train seconds and images (timm's per-update timer), validation seconds."""
    rows = [{"train_s": 0.0, "images": 0, "updates": 0, "val_s": 0.0} for _ in range(epochs)]
    epoch = -1
    for line in text.splitlines():
        if m := TRAIN_LINE.search(line):
            epoch = int(m.group(1))
            seconds, rate = float(m.group(4)), float(m.group(5))
            rows[epoch]["train_s"] += seconds
            rows[epoch]["images"] += round(seconds * rate)
            rows[epoch]["updates"] += 1
        elif (m := TEST_LINE.search(line)) and epoch >= 0:
            rows[epoch]["val_s"] += float(m.group(3))
    if any(r["updates"] == 0 for r in rows):
        sys.exit("timm's log has an epoch without Train: lines; was --log-interval 1 passed through?")
    return rows


def fgvc_overrides(args, workers: int, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    precision = {"fp32": "32-true", "bf16": "bf16-mixed"}[args.precision]
    keys = [f"model.name={args.model}", "data.name=cub200", f"data.root={Path(args.root).resolve()}",
            f"data.image_size={args.size}", f"data.val_fraction={args.val_fraction}", f"data.num_workers={workers}",
            f"train.batch_size={args.batch}", f"train.epochs={args.epochs}", f"train.precision={precision}",
            "train.accelerator=cpu", "train.patience=0", "train.seed=0", "aug.geometric=true", f"out={out}"]
    return keys + ([f"data.classes={args.classes}"] if args.classes else []) + list(extra)


def run_fgvc(args, workers: int, work: Path, tag: str, extra: tuple[str, ...] = ()) -> dict:
    out = work / tag
    out.mkdir()
    cmd = [sys.executable, "-c", FGVC_TIMED, "train", "--quiet", *fgvc_overrides(args, workers, out, extra)]
    load = wait_for_quiet(args)
    wall = run_logged(cmd, out / "log.txt", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    text = (out / "log.txt").read_text()
    epochs = [json.loads(line.split(FGVC_EPOCH, 1)[1]) for line in text.splitlines() if FGVC_EPOCH in line]
    run_dir = next(out.glob("*/metrics.json")).parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = (run_dir / "history.csv").read_text().splitlines()
    col = history[0].split(",").index("seconds")
    epoch_s = [float(r.split(",")[col]) for r in history[1:]]
    timed = sum(e["seconds"] for e in epochs)
    if abs(timed - metrics["train_seconds"]) > 0.02 * metrics["train_seconds"] + 0.05:
        sys.exit(f"per-epoch timing ({timed:.2f} s) disagrees with metrics.json train_seconds "
                 f"({metrics['train_seconds']}): the timing wrapper did not wrap fgvc's loop")
    return {"epochs": [{"train_s": e["seconds"], "images": e["images"], "epoch_s": s}
                       for e, s in zip(epochs, epoch_s)],
            "metrics_ips": metrics["train_images_per_second"], "wall": wall, "load": load,
            "command": shlex.join(["fgvc", "train", "--quiet", *fgvc_overrides(args, workers, out, extra)])}


def run_timm(args, view: Path, num_classes: int, work: Path, tag: str = "timm", extra: tuple[str, ...] = ()) -> dict:
    out = work / tag
    out.mkdir()
    cmd = timm_command(args, view, num_classes, out, extra)
    load = wait_for_quiet(args)
    wall = run_logged(cmd, out / "log.txt", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rows = parse_timm_log((out / "log.txt").read_text(), args.epochs)
    return {"epochs": [{**r, "epoch_s": r["train_s"] + r["val_s"]} for r in rows], "wall": wall, "load": load,
            "command": shlex.join(["python", *cmd[1:]])}


def _ips(rows: list[dict]) -> float:
    return sum(r["images"] for r in rows) / sum(r["train_s"] for r in rows) if rows else float("nan")


def _per_epoch(rows: list[dict]) -> float:
    return sum(r["epoch_s"] for r in rows) / len(rows) if rows else float("nan")


def summarise(result: dict) -> dict:
    """img/s of the first epoch, of the later ones, and of all (train time only); s/epoch with validation."""
    e = result["epochs"]
    later = e[1:]
    ips, per = _ips, _per_epoch
    return {"first": ips(e[:1]), "later": ips(later), "all": ips(e), "first_s": per(e[:1]), "later_s": per(later),
            "wall": result["wall"], "load": result["load"]}


def machine() -> str:
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "").split()
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores, flags: {', '.join(have) or 'none of avx2/avx512/bf16'}; torch {torch.__version__}"


def public(text: str, args, work: Path) -> str:
    """``text`` with this machine's paths replaced by names (TIMM_CHECKOUT, WORK) or as given (--root)."""
    pairs = [(str(work), "WORK"), (str(Path(args.root).resolve()), args.root)]
    pairs += [(str(p.resolve().parent), "TIMM_CHECKOUT") for p in (args.timm_train, args.timm_launcher) if p]
    pairs += [(str(p.parent), "TIMM_CHECKOUT") for p in (args.timm_train, args.timm_launcher) if p]
    pairs += [(sys.executable, "python")]
    for old, new in sorted(pairs, key=lambda p: -len(p[0])):
        text = text.replace(old, new)
    return text


def parse_variant(text: str, workers: int, tool: str) -> tuple[str, int, tuple[str, ...]]:
    """``'cache:data.cache=on,data.cache_budget_gb=8'`` -> ``('fgvc cache', workers, ('data.cache=on', ...))``;
    for timm the arguments are train.py's (``'channels-last:--channels-last'``)."""
    tag, sep, items = text.partition(":")
    if not sep or not items or (tool == "fgvc" and any("=" not in k for k in items.split(","))):
        sys.exit(f"variant {text!r}: write TAG:KEY=VALUE[,KEY=VALUE] (fgvc) or TAG:ARG[,ARG] (timm), "
                 "e.g. cache:data.cache=on or channels-last:--channels-last")
    return f"{tool} {tag}", workers, tuple(items.split(","))


def report(args, sizes, timm_runs: list[tuple[str, dict, dict]], fgvc_runs: list[tuple[str, dict, dict]],
           suffix: str = "") -> str:
    """A Markdown section: setup, commands, one row per run; each fgvc row's ratio is to the fastest timm
    row of the round (img/s over all epochs)."""
    import timm

    sha = hashlib.sha256(args.timm_train.read_bytes()).hexdigest()[:16]
    lines = [f"## {args.model}, {args.size} px, batch {args.batch}, {args.precision}, {args.epochs} epochs, "
             f"{args.workers} workers ({datetime.date.today().isoformat()}){suffix}", "",
             f"- machine: {machine()}",
             f"- data: {args.root}{' classes ' + args.classes if args.classes else ''}: {sizes[0]} classes, "
             f"{sizes[1]} train images, {sizes[2]} validation images (fgvc's train/val split, linked for timm)",
             f"- timm {timm.__version__}; train.py from huggingface/pytorch-image-models @ {args.timm_commit} "
             f"(sha256 {sha}...), run {'through ' + args.timm_launcher.name if args.timm_launcher else 'directly'}",
             f"- benchmark: `{shlex.join(['python', 'benchmarks/vs_timm_train.py', *sys.argv[1:]])}`",
             ]
    lines += [f"- {tag}: `{r['command']}`" for tag, r, _ in timm_runs]
    lines += [f"- {tag}: `{r['command']}` (run through a wrapper that times each train_one_epoch call)"
              for tag, r, _ in fgvc_runs]
    lines += [f"- note: {n}" for n in args.note]
    lines += ["- one run after the other, one heavy job at a time; other small jobs may have run beside it",
              "", "| tool | load before | epoch 1 img/s | later epochs img/s | all epochs img/s | epoch 1 s (with val) "
              "| later s/epoch (with val) | process wall s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def row(name, s):
        return (f"| {name} | {s['load']:.2f} | {s['first']:.1f} | {s['later']:.1f} | {s['all']:.1f} | "
                f"{s['first_s']:.1f} | {s['later_s']:.1f} | {s['wall']:.0f} |")

    for tag, _, s in timm_runs:
        lines.append(row(tag, s))
    best_tag, _, timm_s = max(timm_runs, key=lambda t: t[2]["all"])
    for tag, r, s in fgvc_runs:
        lines.append(row(f"{tag} (metrics.json train img/s {r['metrics_ips']:.1f})", s))
        ratio = {k: timm_s[k] / s[k] if k.endswith("_s") or k == "wall" else s[k] / timm_s[k]
                 for k in ("first", "later", "all", "first_s", "later_s", "wall")}
        lines.append(f"| {tag} / {best_tag} (speed; >1 = fgvc faster) | | {ratio['first']:.3f} | {ratio['later']:.3f} | "
                     f"{ratio['all']:.3f} | {ratio['first_s']:.3f} | {ratio['later_s']:.3f} | {ratio['wall']:.3f} |")
    return "\n".join(lines) + "\n\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.timm_train.is_file():
        sys.exit(f"--timm-train {args.timm_train} is not a file; pass the train.py of a timm checkout")
    if REPO in args.timm_train.resolve().parents:
        sys.exit("--timm-train lies inside this repository; use a checkout outside it (never vendored)")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fgvc_vs_timm_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        sizes = build_view(args, work / "view")
        print(f"view: {sizes[0]} classes, {sizes[1]} train, {sizes[2]} validation images", flush=True)
        settings = [("fgvc", args.workers, ())] + ([("fgvc auto workers", -1, ())] if args.fgvc_auto_workers else [])
        settings += [parse_variant(v, args.workers, "fgvc") for v in args.fgvc_variant]
        timm_settings = [("timm train.py", ())]
        for v in args.timm_variant:
            tag, _, extra = parse_variant(v, 0, "timm train.py")  # workers: timm's are --workers for every run
            timm_settings.append((tag, extra))
        tags = [t[0] for t in settings] + [t[0] for t in timm_settings]
        if len(set(tags)) < len(tags):
            sys.exit(f"two settings share a tag ({', '.join(sorted(t for t in tags if tags.count(t) > 1))}); "
                     "give each --fgvc-variant / --timm-variant its own")
        text = ""
        for rep in range(1, args.repeat + 1):  # interleaved: timm, then each fgvc setting, then again
            suffix = f" (run {rep} of {args.repeat})" if args.repeat > 1 else ""
            timm_runs = []
            for tag, extra in timm_settings:
                r = run_timm(args, work / "view", sizes[0], work, f"{tag.replace(' ', '_')}_{rep}", extra)
                timm_runs.append((tag, r, summarise(r)))
                print(f"{tag}{suffix}: {timm_runs[-1][2]}", flush=True)
            fgvc_runs = []
            for tag, workers, extra in settings:
                r = run_fgvc(args, workers, work, f"{tag.replace(' ', '_')}_{rep}", extra)
                fgvc_runs.append((tag, r, summarise(r)))
                print(f"{tag}{suffix}: {fgvc_runs[-1][2]}", flush=True)
            text += public(report(args, sizes, timm_runs, fgvc_runs, suffix), args, work)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        new = not args.out.exists()
        with open(args.out, "a") as f:
            f.write("# fgvc's training loop vs timm's train.py (sections appended by benchmarks/vs_timm_train.py)\n\n"
                    if new else "")
            f.write(text)
        print(text)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
