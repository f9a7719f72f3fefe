"""Seed Table 3 offline: transfer learning by trainable depth, with a source model trained here.

    python benchmarks/transfer_birds50.py --root BIRDS50 [--epochs 20] [--size 96]

Without internet weights, the "pretrained" backbone comes from birds50 itself: the 50
species are split into two disjoint halves (A: the first 25 classes, B: the other 25). A
resnet18 is trained from scratch on A; then B is learned (1) from scratch and (2) from A's
backbone (`model.init_from`) with `model.trainable` = fc, layer4+fc, layer3+layer4+fc,
layer2+layer3+layer4+fc, all. The halves are folder datasets of symbolic links made in a
temporary folder. Prints a Markdown table and writes benchmarks/results/transfer_birds50.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from fgvc import config
from fgvc.data import build_dataset
from fgvc.train import train

TRAINABLE = ["fc", "layer4+fc", "layer3+layer4+fc", "layer2+layer3+layer4+fc", "all"]


def make_half(root: str, out: Path, classes: range) -> Path:
    """``out/{train,test}/<class>/<image>`` links to the CUB-layout images of ``classes``."""
    for split in ("train", "test"):
        ds = build_dataset("cub200", root, split, val_fraction=0.0)
        for s in ds.samples:
            if s.label in classes:
                folder = out / split / ds.class_names[s.label]
                folder.mkdir(parents=True, exist_ok=True)
                os.symlink(Path(s.path).resolve(), folder / Path(s.path).name)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True, help="birds50 (or CUB-200-2011) in the CUB layout")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--size", type=int, default=96)
    args = p.parse_args()
    common = ["data.name=folder", "model.name=resnet18", f"data.image_size={args.size}",
              f"train.epochs={args.epochs}", "train.batch_size=32", "train.lr=1e-3",
              f"train.milestones=[{args.epochs * 3 // 4}]", "train.patience=0", "aug.geometric=true",
              "data.num_workers=0"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = len(build_dataset("cub200", args.root, "train", val_fraction=0.0).class_names)
        half_a = make_half(args.root, tmp / "A", range(0, n // 2))
        half_b = make_half(args.root, tmp / "B", range(n // 2, n))

        def run(name, root, *extra):
            cfg = config.load(None, [*common, f"data.root={root}", f"out={tmp / 'runs' / name}", *extra])
            run_dir = train(cfg, progress=False)
            m = json.loads((run_dir / "metrics.json").read_text())
            rows.append((name, m))
            print(f"{name}: test {m['test_acc']:.4f}  val {m['val_acc']:.4f}  train {m['train_acc']:.4f}  "
                  f"trainable {m['params_trainable']}  {m['seconds']:.0f} s", flush=True)
            return run_dir

        source = run("source: A from scratch", half_a)
        run("B from scratch", half_b)
        for trainable in TRAINABLE:
            run(f"B from A, trainable {trainable}", half_b, f"model.init_from={source}",
                f"model.trainable={trainable}")
    machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    lines = ["| run | train acc | val acc | test acc | trainable params | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {m['train_acc']:.3f} | {m['val_acc']:.3f} | {m['test_acc']:.3f} | "
              f"{m['params_trainable']:,} | {m['seconds']:.0f} |" for name, m in rows]
    table = "\n".join(lines)
    print(table)
    results = Path(__file__).parent / "results" / "transfer_birds50.md"
    results.write_text(
        "# Transfer learning by trainable depth on birds50 (seed Table 3, offline)\n\n"
        f"Written by `python benchmarks/transfer_birds50.py --root BIRDS50 --epochs {args.epochs} "
        f"--size {args.size}` on {machine}.\nresnet18, {args.size} px, {args.epochs} epochs, batch 32, "
        "AdamW lr 1e-3, geometric augmentation; A = the first half of the species, B = the other half.\n\n"
        + table + "\n")


if __name__ == "__main__":
    main()
