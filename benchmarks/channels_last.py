"""Training-step throughput with the weights in channels-last vs the default (NCHW) memory order.

    python benchmarks/channels_last.py --model tf_mobilenetv2_100 --size 224 --batch 32

One AdamW step (forward, backward, update) on random images of the given size, timed as the best
of 3 steps after one warm-up step, in fp32 and bf16 autocast, for each memory order. The result
decides `train.channels_last` per recipe (it is off by default: it helps some models and hurts
others). Prints a Markdown row per setting; results in benchmarks/results/channels_last.md.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from fgvc.models import create_model


def images_per_second(model, x, y, bf16: bool, steps: int = 3) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return len(x) / min(times[1:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tf_mobilenetv2_100")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model, 50).train()
    x, y = torch.rand(args.batch, 3, args.size, args.size), torch.randint(50, (args.batch,))
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| model | size | batch | precision | memory order | img/s |\n| --- | --- | --- | --- | --- | --- |")
    for bf16 in (False, True):
        for channels_last in (False, True):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            ips = images_per_second(model.to(memory_format=fmt), x.contiguous(memory_format=fmt), y, bf16)
            print(f"| {args.model} | {args.size} | {args.batch} | {'bf16' if bf16 else 'fp32'} | "
                  f"{'channels_last' if channels_last else 'NCHW'} | {ips:.1f} |", flush=True)


if __name__ == "__main__":
    main()
