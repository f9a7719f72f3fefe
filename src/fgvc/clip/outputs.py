"""Files the CLIP zero-shot and probe tools write, through fgvc.runs' atomic writers; tensors without pickle."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from fgvc import runs


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as JSON, atomically (``fgvc.runs``: temp file, fsync, rename). A CLIP run's ``metrics.json``
    (a dict with ``task``) gets its ``protocol`` block (``fgvc.protocol.clip_protocol``) added to ``data``
    itself first, so the metrics the run returns carry it too."""
    if Path(path).name == "metrics.json" and isinstance(data, dict) and "task" in data and "protocol" not in data:
        from fgvc.protocol import clip_protocol

        data["protocol"] = clip_protocol(data)
    runs.write_json_atomic(Path(path), data)


def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    runs.write_text_atomic(Path(path), buf.getvalue())


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors (no pickle), atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    runs.write_bytes_atomic(Path(path), save(tensors, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def default_cache_dir() -> Path:
    """``$FGVC_CACHE``, else ``$XDG_CACHE_HOME/fgvc``, else ``~/.cache/fgvc``."""
    if os.environ.get("FGVC_CACHE"):
        return Path(os.environ["FGVC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "fgvc"


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of ``text``; long or path-like values get a short hash so they stay unique."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"
    if len(safe) > limit or safe != text:
        safe = f"{safe[-limit:].strip('-.')}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return safe
