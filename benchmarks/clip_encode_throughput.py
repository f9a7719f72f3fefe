"""CLIP image-encoding throughput (images/s) at batch 64 and 256, random weights, no network.

    python benchmarks/clip_encode_throughput.py                       # tiny model on CPU; + ViT-B-16 on CUDA
    python benchmarks/clip_encode_throughput.py --models tiny,ViT-B-32,ViT-L-14-336 --device cuda

Times ``fgvc.clip.ClipImageEncoder`` (normalisation + image tower + L2 norm) on random
[0, 1] tensors already on the device, under the same autocast as ``encode_images``
(bf16 on GPUs that support it). JPEG decoding and resizing are not included. Results
go to benchmarks/results/clip_encode_throughput.md, one section per machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.transform import PreprocessCfg

from fgvc.clip.models import ClipImageEncoder, autocast, image_size

RESULTS = Path(__file__).parent / "results" / "clip_encode_throughput.md"
TINY = {  # the tests' tiny model (tests/clip/tinyclip.py)
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build(name: str, device: torch.device):
    if name == "tiny":
        model = open_clip.model.CLIP(embed_dim=TINY["embed_dim"], vision_cfg=CLIPVisionCfg(**TINY["vision_cfg"]),
                                     text_cfg=CLIPTextCfg(**TINY["text_cfg"]))
        open_clip.set_model_preprocess_cfg(model, asdict(PreprocessCfg(size=32)))
    else:
        # QuickGELU as for the OpenAI weights; random weights time the same as trained ones
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=True)
    return ClipImageEncoder(model).to(device).eval(), image_size(model)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def images_per_second(encoder, size: int, batch: int, device: torch.device, min_seconds: float, warmup: int) -> float:
    x = torch.rand(batch, 3, size, size, device=device)
    for _ in range(warmup):
        with autocast(device):
            encoder(x)
    sync(device)
    done, start = 0, time.perf_counter()
    while True:
        with autocast(device):
            encoder(x)
        sync(device)
        done += batch
        if time.perf_counter() - start >= min_seconds:
            return done / (time.perf_counter() - start)


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    desc = f"{cpu}, {cores} cores usable, {platform.system()} {platform.release()}, torch {torch.__version__}"
    if device.type == "cuda":
        desc = f"{torch.cuda.get_device_name(device)} + " + desc
    return desc


def write_section(title: str, note: str, rows: list[str], path: Path = RESULTS) -> None:
    """Merge ``rows`` into this machine's section of the results file; other machines' sections are kept."""
    header = ["# CLIP image-encoding throughput", "",
              "Written by `benchmarks/clip_encode_throughput.py`: random weights, random [0, 1] input already on",
              "the device, normalisation + image tower + L2 norm, autocast as in `fgvc.clip.encode_images`",
              "(bf16 on GPU). Decoding and resizing JPEGs are not included.", ""]
    sections: dict[str, tuple[str, dict[str, str]]] = {}  # title -> (note, {row key: row})
    if path.is_file():
        for block in re.split(r"(?m)^## ", path.read_text())[1:]:
            name, _, body = block.partition("\n")
            lines = body.splitlines()
            table = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
            old_note = " ".join(line for line in lines if line.strip() and not line.startswith("|"))
            sections[name.strip()] = (old_note, {"|".join(line.split("|")[1:6]): line for line in table})
    merged = sections.get(title, ("", {}))[1]
    for row in rows:  # a row replaces an earlier one for the same model, size, device, precision and batch
        merged["|".join(row.split("|")[1:6])] = row
    sections[title] = (note, merged)
    text = "\n".join(header)
    for name, (section_note, table) in sections.items():
        text += f"\n## {name}\n\n" + (f"{section_note}\n\n" if section_note else "")
        text += "| model | image px | device | precision | batch | images/s |\n|---|---|---|---|---|---|\n"
        text += "\n".join(table.values()) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated: tiny and/or open_clip names")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per point")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models.split(",") if args.models else (["tiny", "ViT-B-16"] if device.type == "cuda" else ["tiny"])
    precision = ("bf16 autocast" if torch.cuda.is_bf16_supported() else "fp16 autocast") \
        if device.type == "cuda" else f"fp32, {torch.get_num_threads()} CPU thread(s)"
    title = machine(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = f"Last run: {time.strftime('%Y-%m-%d')}, 1-minute load average {load:.1f} at its start (other work shares the CPU)."
    print(title)
    rows = []
    for name in models:
        encoder, size = build(name, device)
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            ips = images_per_second(encoder, size, batch, device, args.seconds, warmup=1 if device.type == "cpu" else 3)
            row = f"| {name} | {size} | {device.type} | {precision} | {batch} | {ips:,.1f} |"
            print(row, flush=True)
            rows.append(row)
            write_section(title, note, rows)  # after every point, so a cut-short run keeps what it measured
        del encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
