"""Device augmentation on its own: time per batch, host synchronisations, repeatability, CPU agreement.

    python benchmarks/device_aug_speed.py [--size 224] [--batch 64] [--root BIRDS50]

``fgvc.train.device_aug.DeviceAugment`` on random uint8 batches on the GPU (the CPU without one),
with and without aug.geometric, Cutout on: ms per batch after warm-up; the number of host
synchronisations one call makes (``torch.cuda.set_sync_debug_mode("warn")`` counts them; the goal
is 0); whether the same (seed, epoch, step) gives the same batch twice; the largest difference
from the same call on the CPU. With ``--root`` (a CUB-layout dataset), also the time to build the
decoded-image cache of its train split from ``host_transform`` with 12 loader workers. Prints lines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch

from fgvc.train.device_aug import DeviceAugment, host_transform


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--root")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    print(torch.cuda.get_device_name() if cuda else "CPU", "torch", torch.__version__)
    for geometric in (True, False):
        aug = DeviceAugment(args.size, geometric=geometric, cutout=1)
        x = (torch.rand(args.batch, 3, aug.in_side, aug.in_side) * 255).to(torch.uint8)
        xd = x.pin_memory().cuda(non_blocking=True) if cuda else x
        for step in range(3):
            aug(xd, 0, step)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        t = time.perf_counter()
        for step in range(20):
            aug(xd, 0, step)
        sync()
        ms = (time.perf_counter() - t) / 20 * 1000
        syncs = []
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                aug(xd, 1, 1)
            torch.cuda.set_sync_debug_mode(0)
            syncs = [str(w.message).splitlines()[0][:100] for w in caught]
        a, b = aug(xd, 2, 3), aug(xd, 2, 3)
        diff = (a.cpu() - aug(x, 2, 3)).abs().max().item()
        print(f"geometric={geometric}: {ms:.2f} ms per batch of {args.batch} ({args.batch / ms * 1000:.0f} img/s), "
              f"host syncs per call: {len(syncs)} {syncs[:2]}, same batch twice: {torch.equal(a, b)}, "
              f"max |device - cpu|: {diff:.4f}", flush=True)
    if args.root:
        from fgvc.data import build_dataset
        from fgvc.data.cache import cached

        for geometric in (True, False):
            ds = build_dataset("cub200", args.root, "train", host_transform(args.size, geometric), 0.1, 0)
            with tempfile.TemporaryDirectory() as folder:
                t = time.perf_counter()
                built = cached(ds, folder, workers=12, progress=False)
                print(f"cache of {len(ds)} train images, host_transform({args.size}, geometric={geometric}): "
                      f"{time.perf_counter() - t:.1f} s, {built.cache.nbytes / 2**20:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
