"""fgvc's training loop vs the bare step of the same model and batch, with and without the image
cache (data.cache) and device augmentation (data.augment_on), plus peak memory.

    python benchmarks/loop_vs_bare.py --root DATA_ROOT --data cub200 --model resnet50 --size 224 \\
        --batch 64 --precision bf16-mixed --out benchmarks/results/loop_vs_bare.md
    python benchmarks/loop_vs_bare.py --synth --model resnet18 --size 32 --batch 8 --epochs 1 --out /tmp/smoke.md
    python benchmarks/loop_vs_bare.py --root DATA_ROOT --data cub200 --model resnet18 --size 64 --batch 32 \\
        --precision bf16-mixed --epochs 1 --whole-run --settings host --out benchmarks/results/loop_vs_bare.md

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

``--whole-run`` measures what a user sees instead: one run of 1 + E epochs per setting, its
training images over its training seconds with the first epoch counted (metrics.json
``train_images_per_second``), beside its later epochs alone (read from the same run), each against
the bare step. It also says where each epoch's time went: seconds waiting for the loader's next
batch (decoding and augmenting, on the loop's own cores when the loader has no workers) against
seconds of the step itself (forward, backward, optimizer, bookkeeping), the first and last step
apart (kernel warm-up; the last batch's other shape). Every row names the OpenMP wait policy the
run chose (``fgvc.openmp``) and how many cores' worth of CPU time other processes took while it
ran: a row measured beside other work says so. Where the machine's speed drifts, a bare step is
measured after every setting and each row is compared with the mean of those beside it;
``--quiet-wait S`` first waits up to S seconds for other processes to leave the cores.

The bare step's img/s is the median of ``--bare-spans`` spans of ``--bare-steps`` steps (three of
20 by default; the rows before 2026-12-07 used one span as long as the measured epochs), with
OpenMP's defaults whatever the loop was given (``OMP_WAIT_POLICY=PASSIVE python ...`` measures a loop
whose threads sleep at once against the fastest bare step). ``--key K=V`` passes another setting to
the loop.

Appends a Markdown table (machine, date, command, one row per setting and one for the bare step) to
``--out``. Two models at 224 px on an H200: about 5 minutes with birds50 (1500 training images);
``--whole-run --epochs 1`` with resnet18 at 64 px on a 2-core CPU: about 40 s per setting.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
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


class _StepClock:
    """Stands in for the training loop's progress bar (``fgvc.train.loop.tqdm``) and times, per epoch, the
    wait for each batch and the step that follows it (until the loop asks for the next batch)."""

    epochs: list[dict] = []

    def __init__(self, iterable, *args, **kwargs):
        self.iterable = iterable

    def __iter__(self):
        epoch = {"steps": [], "waits": [], "images": 0}
        _StepClock.epochs.append(epoch)
        it, clock = iter(self.iterable), time.perf_counter
        while True:
            t0 = clock()
            try:
                batch = next(it)
            except StopIteration:
                return
            t1 = clock()
            epoch["waits"].append(t1 - t0)
            epoch["images"] += len(batch[1])
            yield batch
            epoch["steps"].append(clock() - t1)

    def set_postfix(self, **kwargs):
        pass


def _others_cores():
    """A function returning the cores' worth of CPU time other processes took since this call (None off Linux)."""
    from fgvc.train.threads import CLK_TCK, cpu_busy_ticks, own_ticks

    cpus, start = os.sched_getaffinity(0), time.perf_counter()
    busy, own = cpu_busy_ticks(cpus), own_ticks()

    def since() -> float | None:
        busy1, own1 = cpu_busy_ticks(cpus), own_ticks()
        if None in (busy, own, busy1, own1):
            return None
        return ((busy1 - busy) - (own1 - own)) / CLK_TCK / (time.perf_counter() - start)
    return since


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
    """Loop img/s for one setting, in this process: the steady state (a 1-epoch and a (1 + E)-epoch run), or
    with ``--whole-run`` one (1 + E)-epoch run as a user sees it, with where its time went."""
    # fgvc before torch, as `fgvc train` imports them: fgvc's choice of OpenMP wait policy must precede torch's load
    import fgvc  # noqa: F401, I001
    import torch
    import fgvc.train.device_aug as device_aug
    import fgvc.train.loop as loop
    from fgvc import config

    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    calls = [0]
    original = device_aug.DeviceAugment.__call__

    def counted(self, *a, **k):
        calls[0] += 1
        return original(self, *a, **k)

    device_aug.DeviceAugment.__call__ = counted  # proves data.augment_on=device reached the loop
    augment_on, cache = SETTINGS[setting]
    epoch_seconds: list[float] = []  # each train_one_epoch call, as the loop times it
    inner = loop.train_one_epoch

    def timed_epoch(*a, **k):
        t0 = time.perf_counter()
        out = inner(*a, **k)
        epoch_seconds.append(time.perf_counter() - t0)
        return out

    loop.train_one_epoch, loop.tqdm = timed_epoch, _StepClock  # the loop's progress bar is otherwise off here

    def run(epochs: int) -> dict:
        with tempfile.TemporaryDirectory() as out:
            keys = [f"data.name={args.data}", f"data.root={args.root}", f"data.image_size={args.size}",
                    f"model.name={args.model}", f"train.batch_size={args.batch}", f"train.epochs={epochs}",
                    f"data.num_workers={args.workers}", f"train.precision={args.precision}", "train.patience=0",
                    f"aug.geometric={not args.no_geometric}", f"data.augment_on={augment_on}",
                    f"data.cache={cache}", f"data.cache_dir={cache_dir}", f"out={out}", *args.key]
            metrics = json.loads((loop.train(config.load(None, keys), progress=False) / "metrics.json").read_text())
            # images trained (metrics.json "train_images" is the split's size), as loop_overhead.py counts them
            metrics["trained"] = metrics["train_images_per_second"] * metrics["train_seconds"]
            return metrics

    others = _others_cores()
    first = None if args.whole_run else run(1)
    del epoch_seconds[:], _StepClock.epochs[:]
    metrics = run(1 + args.epochs)
    if cache == "on" and not list(Path(cache_dir).glob("*.u8")):
        raise SystemExit(f"{setting}: data.cache=on wrote no cache file: the loop does not read data.cache")
    if augment_on == "device" and not calls[0]:
        raise SystemExit(f"{setting}: data.augment_on=device never called DeviceAugment: the loop ignores the key")
    epochs = _epoch_breakdown(epoch_seconds, _StepClock.epochs)
    if first is None:  # the later epochs of the same run
        later_images, later_seconds = sum(e["images"] for e in epochs[1:]), sum(e["seconds"] for e in epochs[1:])
    else:  # the difference of two runs that share their first epoch
        later_images = metrics["trained"] - first["trained"]
        later_seconds = metrics["train_seconds"] - first["train_seconds"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"setting": setting, "loop": later_images / later_seconds,
            "with_first": metrics["train_images_per_second"], "classes": metrics["num_classes"],
            "precision": metrics["precision"], "train_images": metrics["train_images"],
            "peak_mib": _peak_memory_mib(device), "policy": policy, "others": others(), "epochs": epochs}


def _epoch_breakdown(seconds: list[float], clocked: list[dict]) -> list[dict]:
    """Per epoch of the measured run: seconds, images, and the seconds spent waiting for batches and in steps."""
    return [{"seconds": s, "images": c["images"], "wait": sum(c["waits"]), "steps": sum(c["steps"]),
             "first_step": c["steps"][0], "last_step": c["steps"][-1],
             "median_step": sorted(c["steps"])[len(c["steps"]) // 2], "count": len(c["steps"])}
            for s, c in zip(seconds, clocked, strict=True)]


def _bare(args, classes: int) -> dict:
    """The bare step's img/s: the median of ``--bare-spans`` spans of ``--bare-steps`` steps, in one process
    with torch's OpenMP defaults (loop_overhead imports torch before fgvc), as a plain PyTorch script runs."""
    policy = os.environ.get("OMP_WAIT_POLICY", "default")  # as torch's OpenMP reads it when it loads, next line
    import torch
    from loop_overhead import bare_images_per_second  # same bare step as the loop-overhead benchmark

    others = _others_cores()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spans = sorted(bare_images_per_second(args.model, classes, args.size, args.batch, args.precision, device,
                                          args.bare_steps) for _ in range(args.bare_spans))
    return {"setting": "bare", "loop": spans[len(spans) // 2], "spans": spans, "peak_mib": _peak_memory_mib(device),
            "others": others(), "policy": policy}


def _in_subprocess(argv: list[str], quiet_wait: float = 0, env: dict | None = None) -> dict:
    """One measurement in a fresh process (clean peak memory, no warm caches): its last stdout line. First waits
    up to ``quiet_wait`` seconds for other processes to leave the cores (under 0.3 cores' worth for 2 s)."""
    if quiet_wait > 0:
        _wait_for_quiet(quiet_wait)
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"measurement {' '.join(argv[-4:])} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _wait_for_quiet(seconds: float, below: float = 0.3) -> None:
    from fgvc.train.threads import CLK_TCK, cpu_busy_ticks

    cpus, end = os.sched_getaffinity(0), time.monotonic() + seconds
    while True:
        before = cpu_busy_ticks(cpus)
        time.sleep(2)
        after = cpu_busy_ticks(cpus)
        if before is None or after is None or (after - before) / CLK_TCK / 2 < below or time.monotonic() > end:
            return


def _machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({_cpus()} CPU cores)"
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    flags = next((line for line in info if line.startswith("flags")), "")
    model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.machine())
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return (f"{model} CPU, {_cpus()} cores ({', '.join(wanted) or 'no avx2'}), {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _table(args, rows: list[dict], bares: list[dict], argv: list[str]) -> str:
    import torch

    memory = "peak GPU MiB" if torch.cuda.is_available() else "peak RSS MiB (process / largest child)"
    spans = "; ".join(", ".join(f"{s:.1f}" for s in b["spans"]) for b in bares)
    beside = ("the mean of the bare steps measured just before and just after it" if args.whole_run
              else "the bare step")
    lines = [f"\n## {args.model}, {args.size} px, batch {args.batch}, {rows[0]['precision']}, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n",
             f"Machine: {_machine()}. Command: `python benchmarks/loop_vs_bare.py {shlex.join(argv)}`. "
             f"Bare step: median of {args.bare_spans} spans of {args.bare_steps} steps ({spans} img/s); "
             f"each row's ratios are against {beside}.\n",
             f"| setting | {1 + args.epochs}-epoch run img/s, 1st epoch counted | ratio | img/s after 1st epoch | "
             f"ratio | bare step img/s | OpenMP wait policy | other processes' CPU (cores) | {memory} |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['with_first']:.1f} | {r['with_first'] / r['bare']:.3f} | {r['loop']:.1f} | "
                     f"{r['loop'] / r['bare']:.3f} | {r['bare']:.1f} | {r['policy']} | {_cores(r['others'])} | "
                     f"{r['peak_mib']} |")
    for k, b in enumerate(bares):
        name = f"bare step after {rows[k]['setting']}" if args.whole_run else "bare step"
        lines.append(f"| {name} | | | | | {b['loop']:.1f} | {b['policy']} | {_cores(b['others'])} | {b['peak_mib']} |")
    lines += ["", f"Where each epoch of the {1 + args.epochs}-epoch run went (seconds; waiting: for the loader's "
              "next batch; steps: from a batch to the request for the next):", "",
              "| setting | epoch | seconds | img/s | waiting | steps | first step | median step | last step (batch) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        for k, e in enumerate(r["epochs"]):
            last_batch = e["images"] - (e["count"] - 1) * args.batch
            lines.append(f"| {r['setting']} | {k + 1} | {e['seconds']:.2f} | {e['images'] / e['seconds']:.1f} | "
                         f"{e['wait']:.2f} | {e['steps']:.2f} | {e['first_step']:.3f} | {e['median_step']:.3f} | "
                         f"{e['last_step']:.3f} ({last_batch}) |")
    return "\n".join(lines) + "\n"


def _cores(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


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
    p.add_argument("--whole-run", action="store_true",
                   help="one (1 + E)-epoch run per setting, its img/s with the first epoch counted (as a user sees it)")
    p.add_argument("--key", action="append", default=[], help="another key=value for the loop (repeatable)")
    p.add_argument("--bare-spans", type=int, default=3, help="the bare step's img/s is the median of this many spans")
    p.add_argument("--bare-steps", type=int, default=20, help="steps per span of the bare step")
    p.add_argument("--quiet-wait", type=float, default=0,
                   help="before each measurement, wait up to this many seconds for other processes to leave the cores")
    p.add_argument("--out", required=True, help="Markdown file the table is appended to")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting (or 'bare') here
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--classes", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        out = (_bare(args, args.classes) if args.one == "bare"
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
        rows, bares = [], []
        # the bare step runs as a plain PyTorch script does: OpenMP's own defaults, whatever the loop was given
        plain = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        for setting in settings:
            t0 = time.perf_counter()
            rows.append(_in_subprocess([*common, "--one", setting, "--cache-dir", str(Path(tmp) / "cache")],
                                       args.quiet_wait))
            print(f"{setting}: {rows[-1]['with_first']:.1f} img/s with the first epoch, {rows[-1]['loop']:.1f} after "
                  f"it ({time.perf_counter() - t0:.0f} s)", flush=True)
            if args.whole_run or setting == settings[-1]:  # --whole-run: a bare step after each setting
                bares.append(_in_subprocess([*common, "--one", "bare", "--classes", str(rows[0]["classes"])],
                                            args.quiet_wait, env=plain))
        for k, r in enumerate(rows):  # this machine's speed drifts: each row against the bare steps beside it
            beside = bares[max(0, k - 1):k + 1] if args.whole_run else bares
            r["bare"] = sum(b["loop"] for b in beside) / len(beside)
    table = _table(args, rows, bares, argv)
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
