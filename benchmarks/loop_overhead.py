"""Training throughput of fgvc's loop vs a bare forward+backward+step of the same model.

    python benchmarks/loop_overhead.py --root DATA_ROOT [--data cub200] [--size 96] [--batch 32]

Runs `fgvc.train.train` for 1 and for 1 + EPOCHS epochs and reads the training time and
images from their metrics.json (data loading, augmentation, progress bar, accuracy
bookkeeping included); the difference is the loop's steady state after its first epoch
(kernel warm-up), compared with a bare loop on random tensors already in memory with the
same model, batch, optimizer and precision, also timed after warm-up steps. Prints a Markdown table and appends it to
benchmarks/results/loop_overhead.md. Goal: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from fgvc import config
from fgvc.devices import resolve_channels_last, resolve_precision
from fgvc.models import create_model
from fgvc.train import train


def bare_images_per_second(model_name, classes, size, batch, precision, device, steps, warmup=3,
                           channels_last="auto"):
    precision = resolve_precision(precision, "cuda" if device.startswith("cuda") else "cpu")  # auto -> what runs
    model = create_model(model_name, classes, image_size=size).to(device).train()
    # the memory order fgvc's loop would train in (train.channels_last, default auto), so the two compare
    if resolve_channels_last(channels_last, model, torch.device(device), precision):
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(classes, (batch,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--data", default="cub200")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precision", default="auto")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(args.precision, "auto")

    def run(epochs: int) -> dict:
        with tempfile.TemporaryDirectory() as out:
            cfg = config.load(None, [f"data.name={args.data}", f"data.root={args.root}", f"data.image_size={args.size}",
                                     f"model.name={args.model}", f"train.batch_size={args.batch}",
                                     f"train.epochs={epochs}", f"data.num_workers={args.workers}",
                                     f"train.precision={precision}", "train.patience=0", f"out={out}"])
            return json.loads((train(cfg, progress=False) / "metrics.json").read_text())

    # The bare loop skips its warm-up steps, so the loop's steady state is measured the same
    # way: a 1-epoch run and a (1 + epochs)-epoch run with the same seed do the same first
    # epoch, so the difference of their training times is the later epochs alone.
    first, metrics = run(1), run(1 + args.epochs)
    images = metrics["train_images_per_second"] * metrics["train_seconds"]
    with_warmup = metrics["train_images_per_second"]
    loop = (images - first["train_images_per_second"] * first["train_seconds"]) / (
        metrics["train_seconds"] - first["train_seconds"])
    steps = max(5, metrics["train_images"] * args.epochs // args.batch)
    bare = bare_images_per_second(args.model, metrics["num_classes"], args.size, args.batch, precision, device, steps)
    machine = (torch.cuda.get_device_name() if device == "cuda"
               else f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    row = (f"| {machine} | {args.model} | {args.size} | {args.batch} | {precision} | {args.workers} | "
           f"{with_warmup:.1f} | {loop:.1f} | {bare:.1f} | {loop / bare:.3f} |")
    header = ("| machine | model | px | batch | precision | workers | fgvc loop img/s incl. first epoch | "
              "fgvc loop img/s after it | bare step img/s | ratio (after first epoch) |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(header)
    print(row)
    results = Path(__file__).parent / "results" / "loop_overhead.md"
    if not results.exists():
        results.write_text("# Training loop overhead\n\nWritten by `benchmarks/loop_overhead.py`.\n\n" + header + "\n")
    with results.open("a") as f:
        f.write(row + "\n")


if __name__ == "__main__":
    main()
