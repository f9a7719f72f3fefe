"""Cost of an FGSM accuracy sweep over k budgets against one budget, with the gradient shared across eps.

    python benchmarks/fgsm_sweep_cost.py [--repeats 5] [--batch 32] [--size 96] [--threads N] [--cpu-time]

Times, on one batch through ``fgvc.robust.evaluate_attack``: one eps (gradient +
one scoring forward), the seed's k = 6 nonzero eps (one gradient + 6 forwards) and
its full list with eps 0 (clean predictions come from the gradient's forward). Also
times a forward and a forward+backward (the attack's input gradient) to state the
goal: T(k) / T(1) <= (1 + (k - 1) * fwd / (fwd + bwd)) * 1.10. Writes a Markdown
table to results/fgsm_sweep_cost.md next to this script and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

import fgvc.robust as robust


class Normalize(nn.Module):
    """ImageNet mean/std as the model's first layer, as in every fgvc model."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def median_seconds(cases: dict, repeats: int, clock=time.perf_counter) -> dict[str, float]:
    """Median wall time of each case; the cases take turns so that load from other processes hits all alike."""
    for fn in cases.values():
        fn()  # warm-up: allocator, kernels, lazy init
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--cpu-time", action="store_true",
                        help="measure process CPU time instead of wall time (steadier on a shared machine; use with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = nn.Sequential(Normalize(), resnet18(num_classes=200)).eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.randint(200, (args.batch,))
    loader = [(x, y)]
    nonzero = [e for e in robust.SEED_EPS if e > 0]
    k = len(nonzero)

    def sweep(eps_list):
        return lambda: robust.evaluate_attack(model, loader, "fgsm", eps_list, progress=False)

    def forward():
        with torch.no_grad():
            model(x)

    def separate():  # the unshared way: a gradient per eps
        for eps in nonzero:
            with torch.no_grad():
                model(robust.fgsm(model, x, y, eps))

    t = median_seconds({
        "fwd": forward,
        "fwd_bwd": lambda: robust.fgsm(model, x, y, 0.05),
        "one": sweep([nonzero[0]]),
        "many": sweep(nonzero),
        "full": sweep(list(robust.SEED_EPS)),
        "naive": separate,
    }, args.repeats, time.process_time if args.cpu_time else time.perf_counter)
    fwd, fwd_bwd, one, many, full, naive = (t[n] for n in ("fwd", "fwd_bwd", "one", "many", "full", "naive"))
    goal = (1 + (k - 1) * fwd / fwd_bwd) * 1.10

    machine = (f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
               f"torch {torch.__version__} with torch.get_num_threads() = {torch.get_num_threads()}")
    rows = [
        ("forward (no grad)", fwd, fwd / one),
        ("forward + input backward (one FGSM batch)", fwd_bwd, fwd_bwd / one),
        ("sweep, 1 eps (0.05): gradient + 1 scoring forward", one, 1.0),
        (f"sweep, k = {k} eps (0.05..0.3): gradient + {k} forwards", many, many / one),
        (f"sweep, seed list of {k + 1} eps incl. clean", full, full / one),
        (f"{k} separate FGSM calls + {k} forwards (no sharing)", naive, naive / one),
    ]
    lines = [
        "# FGSM sweep cost",
        "",
        f"resnet18 (200 classes) at {args.size} px, batch {args.batch}, CPU, median {'CPU' if args.cpu_time else 'wall'} time of "
        f"{args.repeats} interleaved runs after one warm-up. Machine: {machine}.",
        "",
        "| what | seconds | / 1-eps sweep |",
        "|---|---|---|",
        *(f"| {name} | {sec:.3f} | {ratio:.2f} |" for name, sec, ratio in rows),
        "",
        f"Goal for k = {k}: T(k) / T(1) <= (1 + (k - 1) * fwd / (fwd + bwd)) * 1.10 = {goal:.2f}; "
        f"measured {many / one:.2f}: {'met' if many / one <= goal else 'NOT met'}.",
        "",
    ]
    text = "\n".join(lines)
    out = Path(__file__).resolve().parent / "results" / "fgsm_sweep_cost.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
