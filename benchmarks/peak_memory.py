"""Peak memory of one training step per backbone and batch size: peak host memory and peak GPU
memory per backbone at batch 16/32/64.

    python benchmarks/peak_memory.py --out benchmarks/results/peak_memory.md
    python benchmarks/peak_memory.py --models resnet18 --batches 8 --size 64 --steps 1 --out /tmp/smoke.md

Each (backbone, batch) runs in a fresh Python process: fgvc's ``create_model`` (200 classes, the
paper's CUB head), AdamW, ``--steps`` forward + backward + optimizer steps (img/s over all but the
first) on random [0, 1] images
already in memory, with the precision ``train.precision=auto`` picks on this machine (bf16 autocast
where the CPU has bf16 instructions or on a GPU, else fp32; ``--precision`` overrides) and the memory
order ``train.channels_last=auto`` picks. Reported:

- on a GPU, ``torch.cuda.max_memory_allocated`` (what torch's allocator handed out at its peak:
  weights, gradients, AdamW's two moments, activations, workspace) and ``max_memory_reserved``
  (what the caching allocator held, the figure ``nvidia-smi`` is closer to);
- on a CPU, the process's peak resident set (``ru_maxrss``) and its growth over the resident set
  just before the first step (model built, weights in memory): the training step's own cost.

The data loader's memory is not in these figures (no images are decoded); ``loop_vs_bare.py`` reports
the whole loop's peak with its workers. Appends a Markdown table (machine, date, command) to ``--out``.
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
import time
from pathlib import Path

MODELS = ("resnet18", "resnet50", "mobilenetv2_100", "vit_b_16")


def _rss_mib() -> float:
    """Current resident set of this process, MiB (Linux /proc; 0 elsewhere)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0.0
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def measure(model_name: str, batch: int, size: int, steps: int, precision: str) -> dict:
    """One backbone and batch in this process: peak memory and img/s of ``steps`` training steps."""
    import torch

    from fgvc.devices import resolve_channels_last, resolve_precision
    from fgvc.models import create_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(precision, device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    model = create_model(model_name, 200, image_size=size).to(device).train()
    channels_last = resolve_channels_last("auto", model, torch.device(device), precision)  # as fgvc's loop
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(200, (batch,), device=device)
    before = _rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps):
        if i == 1:  # img/s over the steps after the first (AdamW's state, kernel choice and warm-up)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {"model": model_name, "batch": batch, "params_m": params / 1e6, "precision": precision,
           "memory_order": "channels_last" if channels_last else "NCHW",
           "img_s": (steps - 1) * batch / seconds, "device": device}
    if device == "cuda":
        row |= {"allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                "reserved_mib": torch.cuda.max_memory_reserved() / 2**20}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        row |= {"peak_rss_mib": peak, "step_mib": peak - before}
    return row


def _machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name")),
                platform.machine())
    flags = next((x for x in info.splitlines() if x.startswith("flags")), "").split()
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {torch.get_num_threads()} threads, flags {', '.join(have) or 'none of avx2/avx512'}; " \
           f"torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated fgvc / timm model names")
    p.add_argument("--batches", default="16,32,64")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3, help="training steps, 2 or more (the first allocates AdamW's "
                   "state and is not timed)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--one", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.size, args.steps, args.precision)))
        return
    if args.steps < 2:
        sys.exit("--steps must be 2 or more (the first step is not timed)")
    device = "cuda" if _has_cuda() else "cpu"
    head = "| model | params (M) | batch | precision | memory order | " + \
        ("peak allocated MiB | peak reserved MiB | img/s |" if device == "cuda" else
         "peak RSS MiB | growth over the step MiB | img/s |")
    lines = [f"## {args.size} px, {args.steps} training steps, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"Machine: {_machine()}. Command: `{shlex.join(['python', 'benchmarks/peak_memory.py', *sys.argv[1:]])}`.",
             "", head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    new = not args.out.exists()
    with open(args.out, "a") as f:  # each row as it is measured: a run cut short keeps what finished
        f.write("# Peak memory of a training step per backbone and batch (benchmarks/peak_memory.py)\n\n" if new else "")
        f.write("\n".join(lines) + "\n")
        for model in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                cmd = [sys.executable, __file__, "--one", model, str(batch), "--size", str(args.size),
                       "--steps", str(args.steps), "--precision", args.precision, "--out", str(args.out)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.stderr.write(done.stderr[-3000:])
                    f.write(f"| {model} | | {batch} | | | failed (exit {done.returncode}: out of memory?) | | |\n")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                mem = (f"{r['allocated_mib']:.0f} | {r['reserved_mib']:.0f}" if device == "cuda" else
                       f"{r['peak_rss_mib']:.0f} | {r['step_mib']:.0f}")
                row = (f"| {r['model']} | {r['params_m']:.1f} | {r['batch']} | {r['precision']} | "
                       f"{r['memory_order']} | {mem} | {r['img_s']:.1f} |")
                f.write(row + "\n")
                f.flush()
                print(row, flush=True)
        f.write("\n")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()

if __name__ == "__main__":
    main()
