"""Run directories: atomic writes, the metrics.json schema, checkpoints, loading a run.

A run directory holds ``config.yaml`` (resolved), ``classes.json``, ``metrics.json``,
``history.csv``, ``curves.png`` and ``checkpoints/{best,last}.safetensors`` plus
``checkpoints/last_state.pt`` (the weights, optimizer, scheduler and history of the last
finished epoch, in one file so that an epoch is committed by one atomic rename; tensors and
plain values only, loaded with ``weights_only=True``). Model weights are safetensors, so
loading a run never unpickles code. Every file is written atomically; a write that fails
(disk full) leaves the previous version in place and raises UserError.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from fgvc import config as config_mod
from fgvc.errors import UserError

# Fields every training run's metrics.json holds (accuracies are fractions in [0, 1]).
METRIC_FIELDS = (
    "train_acc", "val_acc", "test_acc", "test_top5", "train_loss", "val_loss", "best_epoch",
    "epochs_run", "seconds", "train_images_per_second", "params_total", "params_trainable",
)
_UMASK = os.umask(0)
os.umask(_UMASK)

# a temp file of write_bytes_atomic (mkstemp adds 8 characters), or of the curves plot of older versions
_PARTIAL = re.compile(r"^\.[^.].*\.([a-z0-9_]{8}|tmp\.png)$")

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half.

    A failed write (disk full, no permission) leaves the old file as it was, removes the temp
    file and raises UserError naming the path.
    """
    path = Path(path)
    try:
        _write_atomic(path, data)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or e.__class__.__name__}); free disk space or fix "
                        f"the folder's permissions and run again (the previous {path.name}, if any, is unchanged)"
                        ) from None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temp files a killed process left behind in ``folder`` (``.<name>.<random>``); return them."""
    stale = [p for p in Path(folder).glob(".*") if p.is_file() and _PARTIAL.match(p.name)]
    for p in stale:
        p.unlink()
    return stale


def save_figure(fig, path: Path, dpi: int = 100, tight: bool = True) -> Path:
    """A matplotlib figure as a PNG, written atomically (a bare ``Figure`` renders with Agg: no
    pyplot state, no display)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    write_bytes_atomic(Path(path), buf.getvalue())
    return Path(path)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv_atomic(path: Path, rows: list[dict], fields) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def save_weights(state_dict: dict, path: Path) -> None:
    """Model weights as safetensors, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    write_bytes_atomic(path, save(tensors))


def save_state(state: dict, path: Path) -> None:
    """Training state (tensors, numbers, strings, lists, dicts only) via torch.save, atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_state(path: Path, required: tuple[str, ...] = ()) -> dict:
    """A ``save_state`` dict, unpickled with ``weights_only=True`` (tensors and plain values only, never code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with code, or a damaged file
        raise UserError(f"training state {path} cannot be loaded safely ({e.__class__.__name__}); "
                        "it is damaged or not written by fgvc") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"training state {path} lacks {missing[0]!r}; it is damaged or not written by fgvc")
    return state


def load_weights(path: Path) -> dict:
    if not Path(path).is_file():
        raise UserError(f"weights file {path} does not exist; was the run finished?")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"weights file {path} is not a valid safetensors file ({e})") from None


def staging_dir(out: Path) -> Path:
    """A new hidden folder beside ``out`` to write into before the rename that publishes it."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise UserError(f"cannot write into {out.parent} ({e.strerror or e.__class__.__name__}); "
                        "fix the folder's permissions or pass another --out") from None


def check_out_dir(path: str | Path, what: str) -> Path:
    """``path`` (expanded) when it can be an output folder: it is one, or nothing exists there yet.

    Raises UserError naming ``what`` (the option or key, e.g. ``--out`` or ``out``) when ``path``, or a
    folder above it, is an existing file. Nothing is created: callers check before any work and make
    the folder when they write."""
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.is_dir():
            break
        if p.exists() or p.is_symlink():  # a file, or a link to nothing
            where = f"{path} is a file" if p == path else f"{path} lies under {p}, which is a file"
            raise UserError(f"{what} {where}, not a folder; pass a folder (new or existing) as {what}, or move "
                            f"the file away")
    return path


def new_run_dir(out: str | Path, model: str, data: str, what: str = "out") -> Path:
    """``out/<YYYYmmdd-HHMMSS>-<data>-<model>``, made unique with a suffix; UserError when ``out`` is a
    file (``check_out_dir``)."""
    out = check_out_dir(out, what)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{data}-{model}".replace("/", "_").replace(":", "_")
    path = out / stem
    n = 1
    while path.exists():
        n += 1
        path = out / f"{stem}-{n}"
    path.mkdir(parents=True)
    return path


def check_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not an fgvc run directory (no config.yaml); "
                        "pass the folder that `fgvc train` printed")
    return run_dir


def load_config(run_dir: str | Path) -> config_mod.Config:
    run_dir = check_run_dir(run_dir)
    return config_mod.load(run_dir / "config.yaml")


def load_class_names(run_dir: str | Path) -> list[str]:
    path = Path(run_dir) / "classes.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; the run directory is incomplete")
    names = _read_json(path)
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise UserError(f"{path} must hold a list of class names; the run directory is damaged")
    return names


def read_metrics(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    return _read_json(path) if path.is_file() else {}


def read_history(run_dir: Path) -> list[dict]:
    """history.csv rows with numbers as floats (epoch as int); [] when missing or unreadable."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                rows.append({k: (int(float(v)) if k == "epoch" else float(v)) for k, v in row.items()
                             if k and v not in (None, "")})
    except (ValueError, OSError, UnicodeDecodeError):
        return rows  # the epochs read before a damaged line
    return [r for r in rows if "epoch" in r]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path} cannot be read as JSON ({e.__class__.__name__}); the run directory is "
                        "damaged") from None
