"""Per-image cost of a training item read from image files vs from fgvc's decoded-image cache.

    python benchmarks/image_cache.py --root BIRDS50 [--data cub200] [--images 400]

For the train split: the geometric training pipeline at 96 px (the cache holds the decoded
image; crop, flip, rotation run per item) and the evaluation pipeline at 224 px (the cache
holds the final crop), each item under PerSampleSeeded as training draws it, one thread, in
this process; plus the cache's build time and size. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from fgvc.data import build_dataset
from fgvc.data.cache import cached
from fgvc.data.seeding import PerSampleSeeded
from fgvc.data.transforms import decode_min_side, eval_transform, train_transform


def ms_per_item(dataset, n: int) -> float:
    items = PerSampleSeeded(dataset, 0)
    t = time.perf_counter()
    for i in range(n):
        items[(0, i % len(dataset))]
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--data", default="cub200")
    p.add_argument("--images", type=int, default=400)
    args = p.parse_args()
    torch.set_num_threads(1)
    print("| pipeline | files ms/image | cache ms/image | cache build s | cache MiB |\n| --- | --- | --- | --- | --- |")
    for label, size, transform, geometric in [("train, 96 px, aug.geometric", 96, train_transform(96, True), True),
                                               ("eval, 224 px", 224, eval_transform(224), False)]:
        ds = build_dataset(args.data, args.root, "train", transform, 0.1, 0)
        ds.decode_min_side = decode_min_side(size, geometric)
        with tempfile.TemporaryDirectory() as folder:
            t = time.perf_counter()
            fast = cached(ds, folder, progress=False)
            build = time.perf_counter() - t
            files, cache = ms_per_item(ds, args.images), ms_per_item(fast, args.images)
            print(f"| {label} ({len(ds)} images) | {files:.2f} | {cache:.2f} | {build:.1f} | "
                  f"{fast.cache.nbytes / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    main()
