"""fgvc's training loop vs the bare step of the same model and batch, with and without the image
cache (data.cache) and device augmentation (data.augment_on), plus peak memory.

    python benchmarks/loop_vs_bare.py --root DATA_ROOT --data cub200 --model resnet50 --size 224 \\
        --batch 64 --precision bf16-mixed --out benchmarks/results/loop_vs_bare.md
    python benchmarks/loop_vs_bare.py --synth --model resnet18 --size 32 --batch 8 --epochs 1 --out /tmp/smoke.md

For each setting (``host``, ``host+cache``, ``device``, ``device+cache`` by default; ``--settings``
picks some) a fresh Python process runs ``fgvc.train.train`` for 1 and for 1 + E epochs with the
same seed, as ``loop_overhead.py`` does: the two runs share their first epoch, so the difference of
their training times (metrics.json ``train_seconds`` and images trained) is the loop's steady state,
data loading, augmentation and bookkeeping included, after the first epoch (kernel warm-up, the
cache's build). The bare step is ``loop_overhead.bare_images_per_second``: forward, backward and
AdamW on random tensors already on the device, same model, batch and precision, in its own
process. Peak memory is per process: ``torch.cuda.max_memory_allocated`` on a GPU, else the peak
resident set of the process and that of its largest child (``ru_maxrss``). Training uses
``aug.geometric=true`` (random-resized-crop, flip, rotation: the work device augmentation moves) unless
``--no-geometric``. The cache lives in a temp folder, built in each cached setting's first run.
A setting whose key did not reach the loop (no cache file written, device augmentation never
called) stops the script instead of writing a row that measures nothing.

Appends a Markdown table (machine, date, command, one row per setting and one for the bare step) to
``--out``. Two models at 224 px on an H200: about 5 minutes with birds50 (1500 training images).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {"host": ("host", "off"), "host+cache": ("host", "on"), "device": ("device", "off"),
            "device+cache": ("device", "on")}


def _peak_memory_mib(device: str) -> str:
    """Peak GPU memory allocated by torch, or the peak resident set of this process / of its largest
    child (a loader worker, or a helper some library started at import), MiB."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"{own:.0f} / {child:.0f}"


def _one_setting(args, setting: str, cache_dir: str) -> dict:
    """Steady-state loop img/s for one setting, in this process."""
    import torch

    import fgvc.train.device_aug as device_aug
    from fgvc import config
    from fgvc.train import train

    calls = [0]
    original = device_aug.DeviceAugment.__call__

    def counted(self, *a, **k):
        calls[0] += 1
        return original(self, *a, **k)

    device_aug.DeviceAugment.__call__ = counted  # proves data.augment_on=device reached the loop
    augment_on, cache = SETTINGS[setting]

    def run(epochs: int) -> dict:
        with tempfile.TemporaryDirectory() as out:
            keys = [f"data.name={args.data}", f"data.root={args.root}", f"data.image_size={args.size}",
                    f"model.name={args.model}", f"train.batch_size={args.batch}", f"train.epochs={epochs}",
                    f"data.num_workers={args.workers}", f"train.precision={args.precision}", "train.patience=0",
                    f"aug.geometric={not args.no_geometric}", f"data.augment_on={augment_on}",
                    f"data.cache={cache}", f"data.cache_dir={cache_dir}", f"out={out}"]
            metrics = json.loads((train(config.load(None, keys), progress=False) / "metrics.json").read_text())
            # images trained (metrics.json "train_images" is the split's size), as loop_overhead.py counts them
            metrics["trained"] = metrics["train_images_per_second"] * metrics["train_seconds"]
            return metrics

    first, metrics = run(1), run(1 + args.epochs)
    if cache == "on" and not list(Path(cache_dir).glob("*.u8")):
        raise SystemExit(f"{setting}: data.cache=on wrote no cache file: the loop does not read data.cache")
    if augment_on == "device" and not calls[0]:
        raise SystemExit(f"{setting}: data.augment_on=device never called DeviceAugment: the loop ignores the key")
    later_images = metrics["trained"] - first["trained"]
    later_seconds = metrics["train_seconds"] - first["train_seconds"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"setting": setting, "loop": later_images / later_seconds,
            "with_first": metrics["train_images_per_second"], "classes": metrics["num_classes"],
            "precision": metrics["precision"], "train_images": metrics["train_images"],
            "peak_mib": _peak_memory_mib(device)}


def _bare(args, classes: int, train_images: int) -> dict:
    import torch
    from loop_overhead import bare_images_per_second  # same bare step as the loop-overhead benchmark

    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps = max(5, train_images * args.epochs // args.batch)
    ips = bare_images_per_second(args.model, classes, args.size, args.batch, args.precision, device, steps)
    return {"setting": "bare", "loop": ips, "peak_mib": _peak_memory_mib(device)}


def _in_subprocess(argv: list[str]) -> dict:
    """One measurement in a fresh process (clean peak memory, no warm caches): its last stdout line."""
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"measurement {' '.join(argv[-4:])} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({_cpus()} CPU cores)"
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return f"{platform.machine()} CPU, {_cpus()} cores ({', '.join(wanted) or 'no avx2'}), {torch.get_num_threads()} threads"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _table(args, rows: list[dict], bare: dict, argv: list[str]) -> str:
    import torch

    memory = "peak GPU MiB" if torch.cuda.is_available() else "peak RSS MiB (process / largest child)"
    lines = [f"\n## {args.model}, {args.size} px, batch {args.batch}, {rows[0]['precision']}, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n",
             f"Machine: {_machine()}. Command: `python benchmarks/loop_vs_bare.py {shlex.join(argv)}`.\n",
             f"| setting | loop img/s after 1st epoch | loop img/s incl. 1st | bare step img/s | ratio | "
             f"{memory} |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['loop']:.1f} | {r['with_first']:.1f} | {bare['loop']:.1f} | "
                     f"{r['loop'] / bare['loop']:.3f} | {r['peak_mib']} |")
    lines.append(f"| bare step | | | {bare['loop']:.1f} | 1 | {bare['peak_mib']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", help="dataset root (data.root)")
    p.add_argument("--data", default="cub200", help="data.name")
    p.add_argument("--synth", action="store_true", help="generate a tiny synthbirds dataset (a smoke run)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", default="auto", help="train.precision (auto resolves as fgvc does)")
    p.add_argument("--epochs", type=int, default=3, help="epochs measured after the first")
    p.add_argument("--workers", type=int, default=-1, help="data.num_workers (-1: fgvc's auto)")
    p.add_argument("--no-geometric", action="store_true", help="aug.geometric=false")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    p.add_argument("--out", required=True, help="Markdown file the table is appended to")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting (or 'bare') here
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--classes", type=int, help=argparse.SUPPRESS)
    p.add_argument("--train-images", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        out = (_bare(args, args.classes, args.train_images) if args.one == "bare"
               else _one_setting(args, args.one, args.cache_dir))
        print(json.dumps(out))
        return
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        p.error(f"unknown setting {unknown[0] if unknown else '(none)'}; choose from {', '.join(SETTINGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.synth:
            from fgvc.data import synthetic

            args.root, args.data = str(synthetic.generate(Path(tmp) / "synth", classes=4, per_class=16,
                                                          size=64, seed=0)), "synthbirds"
        if not args.root:
            p.error("give --root (a dataset root) or --synth")
        if args.precision == "auto":
            from loop_overhead import resolve_precision

            args.precision = resolve_precision("auto", "auto")
        common = [a for a in argv if a != "--synth"]
        common = [*common, "--root", args.root, "--data", args.data, "--precision", args.precision]
        rows = []
        for setting in settings:
            t0 = time.perf_counter()
            rows.append(_in_subprocess([*common, "--one", setting, "--cache-dir", str(Path(tmp) / "cache")]))
            print(f"{setting}: {rows[-1]['loop']:.1f} img/s ({time.perf_counter() - t0:.0f} s)", flush=True)
        bare = _in_subprocess([*common, "--one", "bare", "--classes", str(rows[0]["classes"]),
                               "--train-images", str(rows[0]["train_images"])])
    table = _table(args, rows, bare, argv)
    print(table)
    out = Path(args.out)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# fgvc loop vs bare step: image cache and device augmentation\n\n"
                       "Written by `benchmarks/loop_vs_bare.py` (its docstring says how it measures).\n")
    with out.open("a") as f:
        f.write(table)


if __name__ == "__main__":
    main()
