"""Which device and precision a run uses: one resolver for training and every analysis.

``resolve_precision`` turns ``train.precision`` (auto | 32-true | bf16-mixed | 16-mixed) into the
precision that runs on this machine; ``check_accelerator`` refuses a device that is not there in
one sentence (Lightning raises a traceback). ``resolve_device`` is every command's ``--device``
(default auto); ``analysis_precision`` and ``autocast`` let an analysis of a run (``fgvc eval``,
``attack``, ``explain``) run in the precision the run trained in. ``resolve_channels_last`` turns
``train.channels_last`` (auto | true | false) into the memory order a run's weights train in.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from fgvc import runs
from fgvc.errors import UserError


def resolve_precision(precision: str, accelerator: str) -> str:
    """The precision that runs. 'auto' -> bf16-mixed on CUDA with bf16, and on CPUs with bf16
    instructions (measured faster there, see benchmarks/results/loop_overhead.md); 32-true otherwise.
    16-mixed on a CPU runs as bf16-mixed (CPU autocast has no fp16; Lightning switches it too), so
    metrics.json records bf16-mixed."""
    if precision != "auto":
        precision = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}.get(precision, precision)
        return "bf16-mixed" if precision == "16-mixed" and runs_on_cpu(accelerator) else precision
    use_cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def runs_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's accelerator choice lands on the CPU (auto prefers CUDA, then MPS)."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available() and not mps_available())


def check_accelerator(accelerator: str, devices: int) -> None:
    """A requested device that is not there: one sentence (Lightning raises a traceback)."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator == "cuda" or (accelerator in ("gpu", "auto") and cuda):
        if not cuda:
            raise UserError(f"train.accelerator={accelerator} but this machine has no usable CUDA GPU; "
                            "use train.accelerator=cpu (or auto)")
        if devices > cuda:
            raise UserError(f"train.devices={devices} but this machine has {cuda} CUDA GPU{'s' * (cuda > 1)}; "
                            f"set train.devices={cuda} or fewer")
    elif accelerator in ("mps", "gpu"):
        if not mps_available():
            raise UserError(f"train.accelerator={accelerator} but this machine has no usable GPU (neither CUDA "
                            "nor Apple MPS); use train.accelerator=cpu (or auto)")
        if devices > 1:
            raise UserError(f"train.devices={devices} with train.accelerator={accelerator}: Apple MPS is one "
                            "device; set train.devices=1")


def resolve_channels_last(setting: str, model: torch.nn.Module, device: torch.device, precision: str) -> bool:
    """Whether ``model`` trains with channels-last weights (the convolutions then run in NHWC: oneDNN on a
    CPU, cuDNN on a GPU). ``true`` / ``false`` as given; ``auto`` -> True for a convolutional network (two
    or more ``nn.Conv2d``: a ViT's one patch-embedding convolution does not count) on a CPU, and on a CUDA
    GPU under mixed precision (PyTorch's channels-last tutorial: tensor-core convolutions want NHWC), else
    False. Measured on a 2-core Xeon, one training step at 224 px: 1.0-1.5x for MobileNetV2,
    EfficientNet-B0, ResNet-18/50 and ConvNeXt, fp32 and bf16 (benchmarks/results/channels_last.md)."""
    if setting != "auto":
        return setting == "true"
    convolutional = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) >= 2
    if device.type == "cpu":
        return convolutional
    return convolutional and device.type == "cuda" and precision in ("bf16-mixed", "16-mixed")


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 instructions (avx512_bf16 or AMX); without them CPU bf16 autocast is
    emulated and several times slower than fp32 (benchmarks/results/precision.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when there is one, else the CPU; ``cpu`` / ``cuda[:N]`` as given.
    A CUDA device on a machine without one is a UserError."""
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda (cuda:N for the N-th GPU)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name} was asked for but this machine has no usable CUDA GPU; use cpu or auto")
    return device


ANALYSIS_PRECISIONS = ("run", "32-true", "bf16-mixed", "16-mixed")
_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def supports_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively on ``device``: CUDA with bf16, or a CPU with bf16 instructions."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def run_precision(run_dir: str | Path) -> str:
    """The precision a run trained in: its metrics.json ``precision``, else its config's ``train.precision``
    resolved for the device it names (``train.accelerator``), else 32-true."""
    try:
        recorded = runs.read_metrics(run_dir).get("precision")
    except (OSError, ValueError, AttributeError, UserError):
        recorded = None
    if recorded:
        return _ALIASES.get(str(recorded), str(recorded))
    try:
        cfg = runs.load_config(run_dir)
    except (OSError, UserError):
        return "32-true"
    return resolve_precision(cfg.train.precision, cfg.train.accelerator)


def analysis_precision(requested: str, device: torch.device, run_dir: str | Path | None = None) -> str:
    """The precision an analysis runs in on ``device``: ``requested`` (``run``: the run's own, see
    ``run_precision``; or 32-true | bf16-mixed | 16-mixed) where the device runs it natively, else 32-true.
    bf16-mixed needs ``supports_bf16(device)``; 16-mixed runs on CUDA and becomes bf16-mixed elsewhere, as
    in training. A value outside ``ANALYSIS_PRECISIONS`` is a UserError."""
    precision = _ALIASES.get(str(requested), str(requested))
    if precision not in ANALYSIS_PRECISIONS:
        raise UserError(f"unknown precision {requested!r}; use run (the precision the run trained in), "
                        "32-true, bf16-mixed or 16-mixed")
    if precision == "run":
        precision = run_precision(run_dir) if run_dir is not None else "32-true"
    if precision == "16-mixed" and device.type != "cuda":
        precision = "bf16-mixed"
    if precision == "bf16-mixed":
        return precision if supports_bf16(device) else "32-true"
    return precision if precision == "16-mixed" else "32-true"


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for a mixed ``precision`` on ``device`` (bf16 or fp16), a no-op context for 32-true.
    Only the forward's matmuls and convolutions change dtype; tensors made outside it (input images,
    an attack's input gradients and steps) stay fp32."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def is_main_process() -> bool:
    """False in the extra processes of a multi-device run, which should stay quiet."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def quiet_fabric(**kwargs):
    """``lightning_fabric.Fabric(**kwargs)`` without its "Using bfloat16 Automatic Mixed Precision"
    banner on stderr: it comes before fgvc has checked anything, and fgvc states the precision itself
    (the run directory line of training; eval's JSON)."""
    import logging

    from lightning_fabric import Fabric

    rank_zero = logging.getLogger("lightning_fabric.utilities.rank_zero")
    level = rank_zero.level
    rank_zero.setLevel(logging.WARNING)
    try:
        return Fabric(**kwargs)
    finally:
        rank_zero.setLevel(level)
