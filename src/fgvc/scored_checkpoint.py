"""Which checkpoint an evaluation scored: recorded in ``eval_<split>.json`` by `fgvc eval`, checked by
`fgvc report`, so that an evaluation of an earlier best checkpoint (`fgvc eval` run while the run was
still training) is never shown as the run's evaluation.

The record (``eval_<split>.json`` ``checkpoint``): ``file`` (relative to the run directory), ``sha256``
and ``bytes`` of the weights file read, ``epoch`` (1-based epoch whose weights they are: metrics.json
``best_epoch``, or for an unfinished run the best val_acc epoch of history.csv; None when unknown) and
``run_finished`` (whether metrics.json existed). Reads files only (history.csv through ``fgvc.runs``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fgvc.runs import read_history

BEST = "checkpoints/best.safetensors"


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (hashlib, read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: Path) -> tuple:
    """(inode, size, mtime_ns): changes when an atomic write replaces the file."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def history_best_epoch(run_dir: Path) -> int | None:
    """1-based epoch of the first highest val_acc in history.csv (what training kept as best.safetensors:
    it replaces the best only on a strictly higher val_acc); None when history.csv is missing or unreadable."""
    best, epoch = None, None
    for row in read_history(Path(run_dir)):
        acc = row.get("val_acc")
        if isinstance(acc, float) and (best is None or acc > best):
            best, epoch = acc, row["epoch"]
    return epoch


def unfinished_note(run_dir: Path, epochs: int, doing: str) -> str | None:
    """The stderr line of an analysis (``doing``: "predicting with", "attacking", ...) of a run that has not
    finished training (no metrics.json), naming the epoch of the best checkpoint it uses; None once finished."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return None
    epoch = history_best_epoch(run_dir)
    which = f"epoch {epoch} of {epochs}" if epoch else f"an unknown epoch of {epochs}"
    return (f"note: {run_dir} has not finished training (no metrics.json): {doing} its best checkpoint so far, "
            f"from {which}")


def record(run_dir: Path, metrics: dict) -> dict:
    """The ``checkpoint`` record of the run's current best checkpoint (``metrics``: its metrics.json, {} while
    the run has not finished). The caller checks ``file_identity`` before and after loading the weights."""
    run_dir = Path(run_dir)
    path = run_dir / BEST
    epoch = metrics.get("best_epoch") if metrics else history_best_epoch(run_dir)
    return {"file": BEST, "sha256": sha256(path), "bytes": path.stat().st_size,
            "epoch": epoch if isinstance(epoch, int) else None, "run_finished": bool(metrics)}


def stale_reason(evaluation: dict, eval_path: Path, run_dir: Path, current: dict) -> str | None:
    """Why an ``eval_<split>.json`` does not describe the run's current best checkpoint, or None when it does.
    ``current``: a dict per run, the current checkpoint's ``epoch`` when known; its sha256 is cached in it. An evaluation
    written before fgvc recorded checkpoints is taken as it is: file times cannot tell (a plain ``cp -r`` of a run
    makes best.safetensors newer than every file beside it)."""
    path = Path(run_dir) / BEST
    if not path.is_file():
        return "the run has no checkpoints/best.safetensors any more"
    scored = evaluation.get("checkpoint")
    if not isinstance(scored, dict) or not scored.get("sha256"):
        return None  # from before the record: shown, as fgvc always did
    if "sha256" not in current:
        current["sha256"] = sha256(path)
    if scored["sha256"] == current["sha256"]:
        return None
    epoch, best = scored.get("epoch"), current.get("epoch")
    return (f"it scored {'the epoch ' + str(epoch) if epoch else 'an earlier'} checkpoint, not the current best "
            f"checkpoint{' (epoch ' + str(best) + ')' if best else ''}")


__all__ = ["record", "file_identity", "sha256", "stale_reason", "history_best_epoch"]
