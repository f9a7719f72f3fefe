"""Latency of `fgvc serve` over HTTP: median and p95 of N requests to /api/predict, /api/explain and /api/attack.

    python benchmarks/serve_latency.py                                   # a tiny generated-data run (trained here)
    python benchmarks/serve_latency.py --run RUN_DIR --image bird.jpg    # ... and a real run and photograph

Starts `fgvc serve RUN_DIR --port 0` as a user would (uvicorn, one process), sends 2 warm-up
requests and then N sequential multipart uploads of one image per endpoint from this process
(urllib over loopback), and times each request from send to the parsed JSON answer: upload,
decode, preprocessing, the model (and Grad-CAM or FGSM), PNG encoding and transfer. Results go
to benchmarks/results/serve_latency.md (rows for the same run name and endpoint are replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "serve_latency.md"
ENDPOINTS = {"/api/predict": {}, "/api/explain": {}, "/api/attack": {"eps": "4"}}


def tiny_run(workdir: Path) -> tuple[Path, Path]:
    """A 1-epoch resnet18 on 4 generated classes at 64 px (as the serve tests use) and one of its images."""
    from fgvc import config
    from fgvc.data import synthetic
    from fgvc.train import train

    root = synthetic.generate(workdir / "data", classes=4, per_class=16, size=64, seed=1)
    cfg = config.load(None, ["model.name=resnet18", "data.image_size=64", "train.epochs=1", "data.num_workers=0",
                             "train.batch_size=16", "data.name=synthbirds", f"data.root={root}",
                             f"out={workdir / 'runs'}"])
    run = train(cfg, progress=False)
    return run, sorted(Path(root).rglob("*.jpg"))[0]


def multipart(image: Path, fields: dict) -> tuple[bytes, str]:
    boundary = "fgvcBenchBoundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"\r\n'
                 "Content-Type: image/jpeg\r\n\r\n".encode() + image.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def time_endpoint(url: str, image: Path, fields: dict, n: int, warmup: int = 2) -> list[float]:
    body, ctype = multipart(image, fields)
    seconds = []
    for i in range(warmup + n):
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
        start = time.perf_counter()
        with urllib.request.urlopen(req, timeout=300) as r:
            json.load(r)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def measure(run: Path, image: Path, n: int) -> tuple[dict, dict]:
    """({endpoint: [seconds]}, /api/info) of one `fgvc serve` process."""
    proc = subprocess.Popen([sys.executable, "-m", "fgvc", "serve", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not match:
            raise SystemExit(f"fgvc serve did not start: {line}{proc.stdout.read()}")
        base = match.group(0).rstrip("/")
        with urllib.request.urlopen(base + "/api/info", timeout=60) as r:
            info = json.load(r)
        return {path: time_endpoint(base + path, image, fields, n) for path, fields in ENDPOINTS.items()}, info
    finally:
        proc.terminate()
        proc.wait(30)


def machine() -> str:
    cpu = platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
        flags = set(re.search(r"flags\s*:\s*(.+)", text).group(1).split())
        cpu += " (" + ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) + ")"
    except (OSError, AttributeError):
        pass
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores usable, torch {torch.__version__}, {torch.get_num_threads()} threads"


def write(rows: dict[str, str], command: str, note: str, path: Path = RESULTS) -> None:
    """Merge rows (keyed by 'run|endpoint') into the results table; other rows are kept."""
    kept = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("| ") and not line.startswith("| run") and len(cells) >= 8:
                kept[f"{cells[0]}|{cells[2]}"] = line
    kept.update(rows)
    text = ("# `fgvc serve` latency\n\nWritten by `benchmarks/serve_latency.py`: one `fgvc serve` process (uvicorn), "
            "N sequential multipart uploads of one image per endpoint over loopback after 2 warm-up requests, timed "
            "from send to parsed JSON (upload, decode, preprocessing, model, Grad-CAM or FGSM, PNG encoding). "
            "/api/attack runs FGSM at eps 4/255 and scores the attacked image.\n\n"
            "| run | input px | endpoint | requests | median ms | p95 ms | machine | date |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(kept.values()) + "\n\n"
            f"Last command: `{command}`. {note}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="run directory (repeatable), after the tiny run")
    parser.add_argument("--image", action="append", default=[], help="image file for each --run")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny generated-data run")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = (f"1-minute load average {load:.1f} at the start; other processes (small test runs) may have shared "
            "the CPU, so the p95 includes their interference.")
    with tempfile.TemporaryDirectory() as tmp:
        if len(args.image) != len(args.run):
            raise SystemExit("give one --image per --run")
        jobs = ([] if args.no_tiny else [tiny_run(Path(tmp))]) + list(zip(args.run, args.image))
        rows, where, today = {}, machine(), time.strftime("%Y-%m-%d")
        for run, image in jobs:
            times, info = measure(Path(run), Path(image), args.requests)
            name = f"{info['title']} ({len(info['classes'])} classes)"
            for path, seconds in times.items():
                ms = np.array(seconds) * 1000
                row = (f"| {name} | {info['image_size']} | {path} | {len(ms)} | {statistics.median(ms):.0f} | "
                       f"{np.percentile(ms, 95):.0f} | {where} | {today} |")
                print(row, flush=True)
                rows[f"{name}|{path}"] = row
    command = "python benchmarks/serve_latency.py " + " ".join(
        a if not os.path.isabs(a) else "<" + Path(a).name + ">" for a in sys.argv[1:])
    write(rows, command.strip(), note)


if __name__ == "__main__":
    main()
