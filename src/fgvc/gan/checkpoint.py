"""GAN run-directory files: checkpoints that load without pickle (atomic writes come from fgvc.runs).

A checkpoint is a folder ``checkpoints/iter_XXXXXX/`` holding ``G.safetensors``,
``G_ema.safetensors``, ``D.safetensors`` and ``state.pt`` (optimizer and RNG state, plain
tensors and numbers, read with ``weights_only=True``). It is written under a temporary
name and renamed whole, then ``checkpoints/latest`` is replaced to name it, so a crash
never leaves a half-written checkpoint behind the pointer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fgvc.errors import UserError
from fgvc.runs import write_text_atomic

_UMASK = os.umask(0)
os.umask(_UMASK)
KEEP_CHECKPOINTS = 2  # default: the newest two survive, so a damaged newest one still leaves a fallback


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new folder in ``parent`` with the mode mkdir would give it (mkdtemp makes 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def _state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; clone makes each tensor its own
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: Path, iteration: int, modules: dict[str, nn.Module], state: dict,
                    keep: int = KEEP_CHECKPOINTS) -> Path:
    """Write modules (name -> module) as safetensors and ``state`` as state.pt; returns the folder.

    Only the newest ``keep`` checkpoint folders survive (0 keeps every one).
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"iter_{iteration:06d}"
    tmp = make_temp_dir(ckpt_root, f".{final.name}.")
    try:
        for name, module in modules.items():
            save_file(_state_dict(module), str(tmp / f"{name}.safetensors"))
        torch.save(state, tmp / "state.pt")
        for f in tmp.iterdir():  # safetensors writes 0600; give the files the mode open() would
            os.chmod(f, 0o666 & ~_UMASK)
        if final.exists():  # same iteration written again (e.g. resume of a finished run)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(ckpt_root / "latest", final.name + "\n")
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders ``checkpoints/iter_XXXXXX``, oldest first."""
    return sorted(p for p in (Path(run_dir) / "checkpoints").glob("iter_*") if p.is_dir())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The folder ``checkpoints/latest`` names, or None when the run has no checkpoint yet."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    return folder if folder.is_dir() else None


def load_weights(module: nn.Module, path: Path) -> nn.Module:
    """Load a safetensors file into ``module`` (strict), or raise UserError naming the file."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint file {path} does not exist; train the GAN first or pick another run")
    module.load_state_dict(load_file(str(path)), strict=True)
    return module


def load_state(folder: Path) -> dict:
    """Optimizer and iteration state; plain data only (``weights_only=True``), never code."""
    path = Path(folder) / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle that wants to run code, or a damaged file: refuse with one sentence
        raise UserError(f"GAN training state {path} cannot be loaded safely ({e.__class__.__name__}); "
                        "it is damaged or was not written by fgvc") from None
