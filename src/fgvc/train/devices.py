"""Which device and precision a run uses: one resolver for training and every analysis.

``resolve_precision`` turns ``train.precision`` (auto | 32-true | bf16-mixed | 16-mixed) into the
precision that runs on this machine; ``check_accelerator`` refuses a device that is not there in
one sentence (Lightning raises a traceback).
"""

from __future__ import annotations

from pathlib import Path

import torch

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
