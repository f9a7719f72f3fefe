"""Peak memory of one training step per backbone, FGVC method and batch size: peak host memory and peak
GPU memory per backbone at batch 16/32/64, and per method (``--methods``) on one backbone.

    python benchmarks/peak_memory.py --out benchmarks/results/peak_memory.md
    python benchmarks/peak_memory.py --models tf_mobilenetv2_100 --methods plain,bilinear,isqrt_cov,wsdan,cal,pmg,api_net \
        --batches 32 --trainable head+blocks:2 --classes 50 --out benchmarks/results/peak_memory.md
    python benchmarks/peak_memory.py --models resnet18 --batches 8 --size 64 --steps 2 --out /tmp/smoke.md

Each (backbone, method, batch) cell runs in a fresh Python process and builds what ``fgvc train`` builds
from a config with ``model.name``, ``method.name``, ``model.trainable`` and ``data.image_size``: the loop's
preflight (``fgvc.train.checks``), Fabric with the precision ``train.precision`` picks (``auto``: bf16
autocast where the CPU has bf16 instructions or on a GPU, else fp32; ``--precision`` overrides),
``fgvc.api.build_model`` (random initial weights: a step's memory and speed do not depend on their values),
the memory order ``train.channels_last=auto`` picks, the loop's criterion and soft targets
(``fgvc.train.tricks``) and its AdamW over the trainable parameters (``fgvc.train.optim``). Then ``--steps``
training steps, each the method's own (``Tricks.loss`` -> ``Method.train_steps``: WS-DAN's crop and drop
passes, PMG's optimizer step per granularity) followed by the loop's optimizer step on the loss it returns,
on random [0, 1] images already in memory; img/s over all steps but the first. A batch holds P classes x
4 images (API-Net pairs images within the batch; every method gets the same batches, so the cells compare).
Method settings are the defaults, except bilinear at ``method.bilinear_dim=256``, as the birds50_methods
study runs it. Reported:

- on a GPU, ``torch.cuda.max_memory_allocated`` (what torch's allocator handed out at its peak:
  weights, gradients, AdamW's two moments, activations, workspace) and ``max_memory_reserved``
  (what the caching allocator held, the figure ``nvidia-smi`` is closer to);
- on a CPU, the process's peak resident set (``ru_maxrss``) and its growth over the resident set
  just before the first step (model built, weights in memory): the training step's own cost;
- how many times each image of the batch went through the backbone (WS-DAN: the image, its crop and its
  drop; counted at the backbone's first convolution) and the optimizer steps per batch.

The data loader's memory is not in these figures (no images are decoded); ``loop_vs_bare.py`` reports
the whole loop's peak with its workers. Appends a Markdown table (machine, date, command) to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("resnet18", "resnet50", "mobilenetv2_100", "vit_b_16")
K = 4  # images per class in a batch (data.pk_images): API-Net's pairs need K >= 2, the authors' code uses 4
# method settings away from their defaults: bilinear as the birds50_methods study runs it (its full
# 1280 x 1280 feature on MobileNetV2 would need 1.6M classifier weights per class)
SETTINGS = {"bilinear": ["method.bilinear_dim=256"]}


def _rss_mib() -> float:
    """Current resident set of this process, MiB (Linux /proc; 0 elsewhere)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0.0
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def cell_config(model_name: str, method: str, batch: int, size: int, precision: str, trainable: str):
    """The training config of one cell (a ``fgvc.config.Config``): batches of P classes x K images."""
    from fgvc import config

    return config.load(None, [f"model.name={model_name}", f"method.name={method}", f"model.trainable={trainable}",
                              f"data.image_size={size}", f"train.batch_size={batch}", f"train.precision={precision}",
                              "data.sampler=pk", f"data.pk_images={K}", *SETTINGS.get(method, [])])


def measure(model_name: str, method: str, batch: int, size: int, steps: int, precision: str,
            trainable: str = "all", classes: int = 200) -> dict:
    """One cell in this process: peak memory and img/s of ``steps`` training steps of ``method`` on
    ``model_name``, built and stepped as fgvc's training loop builds and steps it."""
    import torch

    from fgvc.api import build_model
    from fgvc.devices import resolve_channels_last
    from fgvc.models import count_parameters, train_mode
    from fgvc.models.batchnorm import prepare_batchnorm
    from fgvc.train.checks import check_training
    from fgvc.train.loop import setup_fabric
    from fgvc.train.optim import build_optimizer
    from fgvc.train.tricks import build_tricks

    if batch % K or batch // K > classes:
        raise ValueError(f"batch {batch} is not P x {K} images of P <= {classes} classes")
    cfg = cell_config(model_name, method, batch, size, precision, trainable)
    check_training(cfg)  # the loop's preflight: what the method cannot take is refused here
    fabric, precision = setup_fabric(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, classes)
    prepare_batchnorm(model, cfg, make_dataset=None, measure=False)  # random weights: nothing to re-estimate
    channels_last = resolve_channels_last(cfg.train.channels_last, model, fabric.device, precision)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    counts = count_parameters(model)
    tricks = build_tricks(cfg, classes)
    tricks.criterion.attach(model)
    optimizer = build_optimizer(cfg, model)
    images, updates = _counters(model, optimizer)
    raw_model = model
    model, optimizer = fabric.setup(model, optimizer)
    device = fabric.device
    x = torch.rand(batch, 3, size, size, device=device)
    picked = torch.randperm(classes, generator=torch.Generator().manual_seed(0))[:batch // K]
    x, target = tricks.targets(x, picked.repeat_interleave(K).to(device))  # the loop's soft targets

    def optimizer_step(loss):  # the loop's (fgvc.train.loop.train_one_epoch)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()

    train_mode(model)  # frozen BatchNorm stays in eval mode
    before = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps):
        if i == 1:  # img/s over the steps after the first (AdamW's state, kernel choice and warm-up)
            _sync(device)
            t0 = time.perf_counter()
        loss, _ = tricks.loss(model, raw_model, x, target, fabric.autocast, optimizer_step)  # a method's own steps
        optimizer_step(loss)
    _sync(device)
    seconds = time.perf_counter() - t0
    row = {"model": model_name, "method": method, "trainable": trainable, "batch": batch,
           "params_m": counts["params_total"] / 1e6, "trainable_m": counts["params_trainable"] / 1e6,
           "precision": precision, "memory_order": "channels_last" if channels_last else "NCHW",
           "views": images[0] / (steps * batch), "optimizer_steps": updates[0] / steps,
           "img_s": (steps - 1) * batch / seconds, "device": device.type}
    if device.type == "cuda":
        row |= {"allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                "reserved_mib": torch.cuda.max_memory_reserved() / 2**20}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        row |= {"peak_rss_mib": peak, "step_mib": peak - before}
    return row


def _counters(model, optimizer) -> tuple[list[int], list[int]]:
    """Running counts of images through the backbone (inputs of its first convolution; of the model, for a
    backbone without one) and optimizer steps."""
    import torch

    images, updates = [0], [0]
    stem = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), model)
    stem.register_forward_pre_hook(lambda _, args: images.__setitem__(0, images[0] + len(args[0])))
    optimizer.register_step_post_hook(lambda *_: updates.__setitem__(0, updates[0] + 1))
    return images, updates


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name")),
                platform.machine())
    flags = next((x for x in info.splitlines() if x.startswith("flags")), "").split()
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {torch.get_num_threads()} threads, flags {', '.join(have) or 'none of avx2/avx512'}; " \
           f"torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated fgvc / timm model names")
    p.add_argument("--methods", default="plain", help="comma-separated method.name values (fgvc.methods.METHODS); "
                   "plain is the backbone's own head")
    p.add_argument("--trainable", default="all", help="model.trainable of every cell: all, fc, layer4+fc, head, "
                   "head+blocks:N, ...")
    p.add_argument("--batches", default="16,32,64", help=f"comma-separated batch sizes, each P classes x {K} images")
    p.add_argument("--classes", type=int, default=200, help="classes of the head (200: CUB)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3, help="training steps, 2 or more (the first allocates AdamW's "
                   "state and is not timed)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--one", nargs=3, metavar=("MODEL", "METHOD", "BATCH"), help=argparse.SUPPRESS)  # the child
    args = p.parse_args(argv)
    if args.steps < 2:
        sys.exit("--steps must be 2 or more (the first step is not timed)")
    batches = [int(b) for b in args.batches.split(",")]
    if any(b % K or b < 2 * K or b // K > args.classes for b in batches):
        sys.exit(f"--batches must be multiples of {K} from {2 * K} (P >= 2 classes x {K} images, P <= --classes)")
    if args.one:
        print(json.dumps(_child(args)))
        return
    cells = [(model, method, batch) for model in args.models.split(",") for method in args.methods.split(",")
             for batch in batches]
    write_table(args, cells)


def _child(args) -> dict:
    """One cell's row, or {"refused": sentence} when fgvc refuses the cell (a method on a ViT)."""
    from fgvc.errors import UserError, message

    model, method, batch = args.one
    try:
        return measure(model, method, int(batch), args.size, args.steps, args.precision, args.trainable, args.classes)
    except UserError as e:
        return {"refused": message(e)}


def write_table(args, cells: list[tuple[str, str, int]]) -> None:
    """Measure each cell in a fresh process and append its row to ``args.out`` as it finishes."""
    device = "cuda" if _has_cuda() else "cpu"
    memory = ["peak allocated MiB", "peak reserved MiB"] if device == "cuda" else \
        ["peak RSS MiB", "growth over the step MiB"]
    columns = ["model", "method", "params (M)", "trainable (M)", "batch", "precision", "memory order",
               "backbone views per image / optimizer steps per batch", *memory, "img/s"]
    lines = [f"## {args.size} px, {args.classes} classes, model.trainable={args.trainable}, batches of P classes x "
             f"{K} images, {args.steps} training steps, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"Machine: {_machine()}. Random initial weights. "
             f"Command: `{shlex.join(['python', 'benchmarks/peak_memory.py', *sys.argv[1:]])}`.", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    new = not args.out.exists()
    apart = new or args.out.read_text().endswith("\n\n")  # a reading added below the last table by hand
    with open(args.out, "a") as f:  # each row as it is measured: a run cut short keeps what finished
        f.write("# Peak memory of a training step per backbone, method and batch (benchmarks/peak_memory.py)\n\n"
                if new else "" if apart else "\n")
        f.write("\n".join(lines) + "\n")
        for model, method, batch in cells:
            row = _row(_run_cell(args, model, method, batch), model, method, batch, device)
            f.write(row + "\n")
            f.flush()
            print(row, flush=True)
        f.write("\n")


def _run_cell(args, model: str, method: str, batch: int) -> dict:
    """The child process's result for one cell, or {"failed": exit code}."""
    cmd = [sys.executable, __file__, "--one", model, method, str(batch), "--size", str(args.size),
           "--steps", str(args.steps), "--precision", args.precision, "--trainable", args.trainable,
           "--classes", str(args.classes), "--batches", str(batch), "--out", str(args.out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-3000:])
        return {"failed": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(r: dict, model: str, method: str, batch: int, device: str) -> str:
    """One Markdown table row of a cell's result."""
    if "failed" in r or "refused" in r:
        why = f"refused: {r['refused']}" if "refused" in r else f"failed (exit {r['failed']}: out of memory?)"
        return f"| {model} | {method} | | | {batch} | | | | {why} | | |"
    mem = (f"{r['allocated_mib']:.0f} | {r['reserved_mib']:.0f}" if device == "cuda" else
           f"{r['peak_rss_mib']:.0f} | {r['step_mib']:.0f}")
    return (f"| {r['model']} | {r['method']} | {r['params_m']:.2f} | {r['trainable_m']:.2f} | {r['batch']} | "
            f"{r['precision']} | {r['memory_order']} | {r['views']:g} / {r['optimizer_steps']:g} | {mem} | "
            f"{r['img_s']:.1f} |")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()

if __name__ == "__main__":
    main()
