"""cGAN training speed (iterations/s) of `fgvc.gan.train.train_iteration`, one iteration being
one generator update and n_dis (5) discriminator updates, as in the seed.

    python benchmarks/gan_speed.py                                 # CPU: 32 and 64 px, ch 64, batch 16
    python benchmarks/gan_speed.py --device cuda --sizes 64,128 --batch 64

Random uint8 "images" held in memory the way `train_gan` holds a decoded dataset (so batch
assembly is included, JPEG decoding is not), 200 classes as CUB. Results go to
benchmarks/results/gan_speed.md, one section per machine; a row replaces an earlier row
with the same settings.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path

import torch

from fgvc.gan.batches import RealBatches
from fgvc.gan.networks import Discriminator, Generator, count_parameters
from fgvc.gan.train import train_iteration

RESULTS = Path(__file__).parent / "results" / "gan_speed.md"
COLUMNS = "| image px | ch | batch | n_dis | device | threads | iterations/s | s/iteration | G params | D params |"


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()).group(1).strip()
    except (OSError, AttributeError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    desc = f"{cpu}, {cores} cores usable, {platform.system()} {platform.release()}, torch {torch.__version__}"
    return f"{torch.cuda.get_device_name(device)} + {desc}" if device.type == "cuda" else desc


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def iterations_per_second(size: int, ch: int, batch: int, n_dis: int, n_classes: int, device: torch.device,
                          iterations: int, warmup: int) -> tuple[float, int, int]:
    torch.manual_seed(0)
    G = Generator(n_classes, size, ch).to(device)
    D = Discriminator(n_classes, size, ch).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.9))
    n_images = max(4 * batch, 256)
    real = RealBatches(torch.randint(0, 256, (n_images, 3, size, size), dtype=torch.uint8),
                       torch.randint(n_classes, (n_images,)), batch, seed=0)
    rng = torch.Generator().manual_seed(1)

    def noise(n: int):
        return torch.randn(n, G.z_dim, generator=rng).to(device), torch.randint(n_classes, (n,), generator=rng).to(device)

    k = 0
    for step in range(warmup + iterations):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        train_iteration(G, D, opt_g, opt_d, [real.batch(k + i, device) for i in range(n_dis)], noise)
        k += n_dis
    sync(device)
    return iterations / (time.perf_counter() - start), count_parameters(G), count_parameters(D)


def write_section(title: str, note: str, rows: list[str], path: Path = RESULTS) -> None:
    """Merge ``rows`` into this machine's section; other machines' sections are kept."""
    header = ["# cGAN training speed", "",
              "Written by `benchmarks/gan_speed.py`: one iteration = 1 generator update + n_dis discriminator",
              "updates (hinge loss, Adam), 200 classes, random images held in memory as `train_gan` holds a",
              "decoded dataset. Sample grids, checkpoints and JPEG decoding are not included.", ""]
    sections: dict[str, dict[str, str]] = {}
    if path.is_file():
        for block in re.split(r"(?m)^## ", path.read_text())[1:]:
            name, _, body = block.partition("\n")
            table = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| image")]
            sections[name.strip()] = {"|".join(line.split("|")[1:7]): line for line in table}
    merged = sections.setdefault(title, {})
    for row in rows:
        merged["|".join(row.split("|")[1:7])] = row
    text = "\n".join(header)
    for name, table in sections.items():
        text += f"\n## {name}\n\n" + (f"{note}\n\n" if name == title and note else "")
        text += COLUMNS + "\n|" + "---|" * (COLUMNS.count("|") - 1) + "\n" + "\n".join(table.values()) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,64", help="comma-separated image sizes: 32, 64, 128")
    parser.add_argument("--ch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n-dis", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    title = machine(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = f"Last run: {time.strftime('%Y-%m-%d')}, 1-minute load average {load:.1f} at its start (other work shares the CPU)."
    print(title)
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        ips, g_params, d_params = iterations_per_second(size, args.ch, args.batch, args.n_dis, 200, device,
                                                        args.iterations, warmup=1 if device.type == "cpu" else 5)
        row = (f"| {size} | {args.ch} | {args.batch} | {args.n_dis} | {device.type} | {threads} | {ips:.3f} | "
               f"{1 / ips:.2f} | {g_params / 1e6:.1f} M | {d_params / 1e6:.1f} M |")
        print(row, flush=True)
        rows.append(row)
        write_section(title, note, rows)  # after every size, so a cut-short run keeps what it measured


if __name__ == "__main__":
    main()
