"""Which precision should `train.precision=auto` pick on this device? Speed and accuracy of fp32 vs bf16.

    python benchmarks/precision.py [--steps 20] [--synth-epochs 6] [--seeds 0,1,2]

1. Bare training steps (resnet18, 96 px, batch 32, AdamW) in 32-true and bf16-mixed: img/s.
2. The same short synthbirds run (8 classes, 64 px, resnet18 from scratch) in both
   precisions over several seeds: test accuracy (mean, min-max), so a faster precision
   is only chosen if accuracy holds beyond seed noise.
Appends a Markdown table to benchmarks/results/precision.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch
from loop_overhead import bare_images_per_second  # noqa: E402  (script next to this one)

from fgvc import config
from fgvc.data import synthetic
from fgvc.train import train


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--synth-epochs", type=int, default=6)
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = (torch.cuda.get_device_name() if device == "cuda"
               else f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthbirds"
        synthetic.generate(root, classes=8, per_class=100, size=64, seed=0, test_fraction=0.3)
        for precision in ("32-true", "bf16-mixed"):
            speed = bare_images_per_second("resnet18", 50, 96, 32, precision, device, args.steps)
            accs, speeds = [], []
            for seed in [int(v) for v in args.seeds.split(",")]:
                cfg = config.load(None, ["model.name=resnet18", "data.image_size=64",
                                         f"train.epochs={args.synth_epochs}", "train.batch_size=32", "train.lr=2e-3",
                                         "train.patience=0", "data.num_workers=0", "data.name=synthbirds",
                                         f"data.root={root}", f"train.precision={precision}", f"train.seed={seed}",
                                         f"out={tmp}/runs"])
                metrics = json.loads((train(cfg, progress=False) / "metrics.json").read_text())
                accs.append(metrics["test_acc"])
                speeds.append(metrics["train_images_per_second"])
            rows.append(f"| {machine} | {precision} | {speed:.1f} | {sum(speeds) / len(speeds):.1f} | "
                        f"{sum(accs) / len(accs):.4f} ({min(accs):.4f}-{max(accs):.4f}, {len(accs)} seeds) |")
    header = ("| machine | precision | bare step img/s (resnet18, 96 px, b32) | fgvc loop img/s (64 px synthbirds) "
              "| synthbirds test acc, mean (min-max) |\n| --- | --- | --- | --- | --- |")
    print(header)
    print("\n".join(rows))
    results = Path(__file__).parent / "results" / "precision.md"
    if not results.exists():
        results.write_text("# fp32 vs bf16\n\nWritten by `benchmarks/precision.py`.\n\n" + header + "\n")
    with results.open("a") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
