"""Two training jobs on the same CPU cores: how much each slows down, and which thread settings prevent
the collapse.

    python benchmarks/contention.py [--cpus 0,1] [--model resnet18] [--size 96] [--batch 32] [--seconds 40]

Each job is a bare forward + backward + AdamW step of ``--model`` on random tensors (fp32, the
slowest case for spinning threads: many short parallel regions), run in its own process pinned to
``--cpus`` (``os.sched_setaffinity``), for ``--seconds`` after warm-up. For each setting it runs one
job alone, then two side by side, and prints img/s per job. Settings:

- ``default``: what a plain ``python`` process gets (torch's threads = cores it may run on; GNU
  OpenMP's default wait policy, whose threads spin at barriers before sleeping);
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE``, threads sleep at once at a barrier;
- ``spin-10k`` / ``spin-100k``: ``GOMP_SPINCOUNT``, GNU OpenMP threads spin that many times, then sleep;
- ``one-thread``: ``torch.set_num_threads(1)`` per job;
- ``mixed``: the first job with the default policy (spinning), the second with ``PASSIVE``;
- ``fgvc``: what ``fgvc train`` does on a CPU: each job imports fgvc before torch, so fgvc's own
  choice of wait policy applies (``fgvc.openmp``), and resizes its thread pool between steps as
  ``governed`` below; the second job starts ``--stagger`` seconds after the first, as a second run
  started by hand does;
- ``governed``: OpenMP's default policy, and each job resizes its thread pool between steps to the
  cores the other leaves free (``fgvc.train.threads.ThreadGovernor``), the second job staggered too.

A fair share is half the alone speed; "collapse" is far below it. With ``--rounds N`` every setting's
alone and pair measurements are repeated N times, settings interleaved (this machine's speed drifts). Appends a Markdown table to
``--out`` (default benchmarks/results/contention.md) with the CPU model and flags.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# setting -> (environment of the first job, of the second, torch threads (0: torch's default))
SETTINGS = {
    "default": ({}, {}, 0),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    "spin-10k": ({"GOMP_SPINCOUNT": "10000"}, {"GOMP_SPINCOUNT": "10000"}, 0),  # spins this often, then sleeps
    "spin-100k": ({"GOMP_SPINCOUNT": "100000"}, {"GOMP_SPINCOUNT": "100000"}, 0),
    "one-thread": ({}, {}, 1),
    "mixed": ({}, {"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    "fgvc": ({"CONTENTION_FGVC_FIRST": "1", "CONTENTION_GOVERNED": "1"},
             {"CONTENTION_FGVC_FIRST": "1", "CONTENTION_GOVERNED": "1"}, 0),
    "governed": ({"CONTENTION_GOVERNED": "1"}, {"CONTENTION_GOVERNED": "1"}, 0),
}
STAGGERED = ("fgvc", "governed")
OPENMP_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")


def job(args) -> None:
    """One job: print {"ips": images per second} after ``args.seconds`` of steps."""
    os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if os.environ.get("CONTENTION_FGVC_FIRST"):
        import fgvc  # noqa: F401 (its choice of OpenMP wait policy, before torch loads OpenMP)
    import torch

    # what OpenMP read when torch loaded it (importing fgvc.models below sets its own default too late)
    policy = os.environ.get("OMP_WAIT_POLICY", "default") + (
        f" spin {os.environ['GOMP_SPINCOUNT']}" if "GOMP_SPINCOUNT" in os.environ else "")

    from fgvc.models import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, 50, image_size=args.size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.rand(args.batch, 3, args.size, args.size), torch.randint(50, (args.batch,))

    governor = None
    if os.environ.get("CONTENTION_GOVERNED"):
        from fgvc.train.threads import ThreadGovernor

        governor = ThreadGovernor()

    def step():
        if governor is not None:
            governor.tick()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0, n, used = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < args.seconds:
        step()
        n += args.batch
        used.append(torch.get_num_threads())
    print(json.dumps({"ips": n / (time.perf_counter() - t0), "threads": torch.get_num_threads(),
                      "threads_min": min(used) if used else torch.get_num_threads(),
                      "policy": policy}))


def run_jobs(args, setting: str, count: int) -> list[dict]:
    *envs, threads = SETTINGS[setting]
    base = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    cmd = [sys.executable, __file__, "--job", "--cpus", args.cpus, "--model", args.model, "--size", str(args.size),
           "--batch", str(args.batch), "--seconds", str(args.seconds), "--threads", str(threads)]
    procs = []
    for k in range(count):
        if k and setting in STAGGERED:
            time.sleep(args.stagger)  # the first job is running when the second starts and chooses
        procs.append(subprocess.Popen(cmd, env=base | envs[k], stdout=subprocess.PIPE, text=True))
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in info]
    return f"{model} ({', '.join(flags)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpus", default="0,1", help="the cores both jobs share (default: 0,1)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--rounds", type=int, default=1, help="repeat every setting, interleaved")
    p.add_argument("--stagger", type=float, default=8.0, help="seconds between the two fgvc jobs' starts")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "contention.md"))
    p.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.job:
        return job(args)
    rows = []
    for rnd in range(args.rounds):
        for setting in args.settings.split(","):
            alone = run_jobs(args, setting, 1)[0]
            pair = run_jobs(args, setting, 2)
            share = sum(r["ips"] for r in pair) / 2 / (alone["ips"] / 2)
            policies = " / ".join(r["policy"] for r in pair)
            threads = f"{alone['threads']}; " + " / ".join(f"{r['threads_min']}-{r['threads']}" for r in pair)
            rows.append(f"| {setting}{f', round {rnd + 1}' if args.rounds > 1 else ''} | {threads} | "
                        f"{alone['policy']}; {policies} | {alone['ips']:.1f} | "
                        f"{' / '.join(format(r['ips'], '.1f') for r in pair)} | {share:.2f} |")
            print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    table = [f"\n## {time.strftime('%Y-%m-%d')}: {cpu_name()}, cores {args.cpus}, {args.model} {args.size} px, "
             f"batch {args.batch}, fp32, {args.seconds:.0f} s per measurement; 1-minute load average at the "
             f"end {load:.1f}\n",
             "| setting | threads per job: alone; pair (least-last) | wait policy: alone; pair | one job alone img/s | "
             "two jobs side by side img/s (each) | each job vs a fair half |",
             "| --- | --- | --- | --- | --- | --- |", *rows]
    out = Path(args.out)
    if not out.exists():
        out.write_text("# Two jobs on the same cores\n\nWritten by `benchmarks/contention.py` (its docstring "
                       "says what runs). A fair share is 1.00; far below it is the collapse.\n")
    with out.open("a") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
