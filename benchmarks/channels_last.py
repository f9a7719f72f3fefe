"""Training-step throughput with the weights in channels-last vs the default (NCHW) memory order.

    python benchmarks/channels_last.py --model tf_mobilenetv2_100 --size 224 --batch 32
    python benchmarks/channels_last.py --model mobilenetv2_100,efficientnet_b0,resnet50 --size 224

One AdamW step (forward, backward, update) on random images of the given size, timed as the best
of 3 steps after one warm-up step, in fp32 and bf16 autocast, for each memory order, the two orders
of a precision one right after the other (this machine's speed drifts). Runs on the first CUDA GPU
when there is one (fp32 there is TF32 off, torch's default), else on the CPU. The results decide
what ``train.channels_last=auto`` picks (``fgvc.devices.resolve_channels_last``). Prints a
Markdown row per setting; results in benchmarks/results/channels_last.md.
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
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return len(x) / min(times[1:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tf_mobilenetv2_100", help="one or more model names, comma-separated")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = torch.cuda.get_device_name() if device == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"{where}, torch {torch.__version__}")
    print("| model | size | batch | precision | NCHW img/s | channels_last img/s | channels_last / NCHW |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.model.split(","):
        torch.manual_seed(0)
        model = create_model(name, 50, image_size=args.size).to(device).train()
        x = torch.rand(args.batch, 3, args.size, args.size, device=device)
        y = torch.randint(50, (args.batch,), device=device)
        for bf16 in (False, True):
            ips = []
            for fmt in (torch.contiguous_format, torch.channels_last):
                ips.append(images_per_second(model.to(memory_format=fmt), x.contiguous(memory_format=fmt), y, bf16))
            print(f"| {name} | {args.size} | {args.batch} | {'bf16' if bf16 else 'fp32'} | {ips[0]:.1f} | "
                  f"{ips[1]:.1f} | {ips[1] / ips[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
