"""Inference latency of an exported model: PyTorch eager vs TorchScript vs torch.export vs ONNX Runtime.

    python benchmarks/export_latency.py [--models resnet18,resnet50,vit_b_16] [--size 224] [--batches 1,8] [--runs 30]

Random weights (latency does not depend on their values), 200 classes, float32 on the CPU,
torch's thread count for every runtime. Each exported file is checked against the eager
model first (the same check `fgvc export` runs). Prints a Markdown table of median
milliseconds per batch and appends it to benchmarks/results/export_latency.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fgvc.export import EXPORTERS, LOADERS, verify
from fgvc.models import create_model


def median_ms(run, x, runs: int, warmup: int = 3) -> float:
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            run(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    header = ("| machine | model | px | batch | eager ms | torchscript ms | pt2 ms | onnxruntime ms | "
              "max abs logit diff (ts / pt2 / onnx) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name, 200, image_size=args.size).eval()
        example = torch.rand(2, 3, args.size, args.size)
        runners, diffs = {"eager": model}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("torchscript", "pt2", "onnx"):
                path = Path(tmp) / f"model.{fmt}"
                EXPORTERS[fmt](model, example, path, True)
                runners[fmt] = LOADERS[fmt](path)
                diffs[fmt] = verify(model, runners[fmt], args.size, 200, batches, 1e-3)
            for batch in batches:
                x = torch.rand(batch, 3, args.size, args.size)
                ms = {fmt: median_ms(run, x, args.runs) for fmt, run in runners.items()}
                rows.append(f"| {machine} | {name} | {args.size} | {batch} | {ms['eager']:.1f} | "
                            f"{ms['torchscript']:.1f} | {ms['pt2']:.1f} | {ms['onnx']:.1f} | "
                            f"{diffs['torchscript']:.1g} / {diffs['pt2']:.1g} / {diffs['onnx']:.1g} |")
                print(rows[-1], flush=True)
    table = header + "\n" + "\n".join(rows)
    print(table)
    results = Path(__file__).parent / "results" / "export_latency.md"
    if not results.exists():
        results.write_text("# Exported-model latency\n\nWritten by `benchmarks/export_latency.py`: median "
                           "milliseconds per batch, float32, random weights, 200 classes.\n")
    with results.open("a") as f:
        f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
