"""Finding the runs below a folder, finished or not, and what each one's files say.

A run directory is a folder holding a ``metrics.json`` (finished), or a ``config.yaml``,
``history.csv`` or GAN ``meta.json`` without one (unfinished: interrupted, failed, or still
running). Nothing is re-run or loaded onto a device: only the files the other commands wrote
are read, and a file that cannot be read is reported, never a reason to stop the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fgvc import config as config_mod
from fgvc.protocol import differing_fields, flatten
from fgvc.runs import read_history
from fgvc.scored_checkpoint import history_best_epoch, stale_reason

# metrics.json "task" -> report section; a classifier run writes "classifier" (runs from before it: no task)
CLIP_TASKS = ("zeroshot", "clip_finetune", "clip_linear_probe", "label_match", "linear_probe")
GAN_META = "meta.json"  # fgvc.gan.synthesize.META_FILE: class names and architecture of a GAN run
_MARKERS = ("metrics.json", "config.yaml", "history.csv", GAN_META)


def read_json(path: Path):
    """Parsed JSON of a file, or None when it is missing, damaged or not UTF-8."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def read_config(run_dir: Path) -> dict:
    """The run's config.yaml as a plain mapping ({} when missing or unreadable): read as YAML, not through
    fgvc.config, so classifier and GAN configs (and those of older fgvc versions) compare alike."""
    path = Path(run_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _kind(run_dir: Path, metrics: dict) -> str:
    task = metrics.get("task")
    if task == "gan" or (run_dir / GAN_META).is_file():
        return "gan"
    if task in CLIP_TASKS:
        return "clip"
    return "classifier" if task in (None, "train", "classifier") else "other"


def _candidates(root: Path) -> list[Path]:
    """Folders below root (root included) holding a run marker, outside hidden folders and checkpoints/."""
    found = set()
    for marker in _MARKERS:
        for path in root.rglob(marker):
            parts = path.relative_to(root).parts[:-1]
            if any(p.startswith(".") or p == "checkpoints" for p in parts):
                continue  # temp folders of atomic writes, checkpoint folders
            found.add(path.parent)
    return sorted(found)


def command_path(run_dir: Path) -> str:
    """The run directory as a user pastes it into a command: relative to the current directory when it is
    below it, else absolute."""
    path = Path(run_dir).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return str(path)


def _unfinished_note(run_dir: Path, kind: str, metrics: dict, config: dict, history: list[dict],
                     damaged: bool) -> str | None:
    """What is known about a run that did not finish, and the command that continues it; None when it
    finished. ``fgvc train --resume`` continues from checkpoints/last_state.pt, or starts the run over in
    its folder with its config.yaml when no epoch finished."""
    if kind == "gan":
        planned = config.get("iterations")
        done = metrics.get("iterations")
        if metrics and not damaged and (not isinstance(planned, int) or not isinstance(done, int) or done >= planned):
            return None
        ckpt = (run_dir / "checkpoints" / "latest").is_file()
        said = f"{done} of {planned} iterations" if isinstance(done, int) else f"no finished checkpoint of {planned} iterations"
        return said + (f"; continue with fgvc gan train --resume {command_path(run_dir)}" if ckpt else "")
    if metrics and not damaged:
        return None
    planned = (config.get("train") or {}).get("epochs") if isinstance(config.get("train"), dict) else None
    of = f" of {planned}" if planned else ""
    what = "metrics.json is unreadable" if damaged else "no metrics.json"
    if history:
        last = history[-1]
        val = f", val_acc {last['val_acc']:.4f}" if isinstance(last.get("val_acc"), float) else ""
        what += f"; last finished epoch {last['epoch']}{of}{val}"
    else:
        what += f"; no epoch{of} finished"
    if (run_dir / "checkpoints" / "last_state.pt").is_file():
        what += (f"; rewrite metrics.json with fgvc train --resume {command_path(run_dir)}" if damaged and not
                 history_left(config, history) else f"; continue with fgvc train --resume {command_path(run_dir)}")
    elif (run_dir / "config.yaml").is_file():
        what += (f"; no checkpoint to continue from: start it over with fgvc train --resume {command_path(run_dir)}"
                 " (epoch 1, its config.yaml)")
    return what


def history_left(config: dict, history: list[dict]) -> bool:
    """Whether history.csv shows fewer epochs than config.yaml's train.epochs (True when unknown)."""
    planned = (config.get("train") or {}).get("epochs") if isinstance(config.get("train"), dict) else None
    return not (isinstance(planned, int) and history and history[-1]["epoch"] >= planned)


def evaluations(entry: dict) -> list[dict]:
    """The run's eval_<split>.json files `fgvc eval` wrote: dicts with ``split``, ``path``, ``result`` (the
    parsed file) and ``stale`` (None, or why the file does not describe the run's current best checkpoint:
    `fgvc eval` ran while the run was training and a later epoch became the best, see
    ``fgvc.scored_checkpoint``). Unreadable files and files without an accuracy are left out."""
    if "evaluations" in entry:  # read (and the checkpoint hashed) once per report
        return entry["evaluations"]
    found, current = [], {"epoch": entry["metrics"].get("best_epoch") or history_best_epoch(entry["dir"])}
    for path in sorted(entry["dir"].glob("eval_*.json")):
        result = read_json(path)
        if isinstance(result, dict) and "acc" in result:
            found.append({"split": path.stem[len("eval_"):], "path": path, "result": result,
                          "stale": stale_reason(result, path, entry["dir"], current)})
    entry["evaluations"] = found
    return found


def collect_runs(root: Path) -> list[dict]:
    """Every run directory below ``root``: dicts with ``name`` (path relative to root), ``dir``,
    ``command_path`` (the folder as a command takes it, see ``command_path``), ``kind``
    ('classifier', 'clip', 'gan' or 'other'), ``metrics`` ({} when missing), ``config`` (config.yaml as
    a mapping), ``settings`` (see ``settings``), ``history`` (history.csv rows) and ``unfinished`` (None, or a sentence of what is
    known). A folder whose only marker is a damaged metrics.json is not a run (a foreign file)."""
    root = Path(root)
    found = []
    for run_dir in _candidates(root):
        has_metrics = (run_dir / "metrics.json").is_file()
        metrics = read_json(run_dir / "metrics.json") if has_metrics else {}
        damaged = has_metrics and not isinstance(metrics, dict)
        metrics = metrics if isinstance(metrics, dict) else {}
        if damaged and not any((run_dir / m).is_file() for m in _MARKERS[1:]):
            continue
        config, history = read_config(run_dir), read_history(run_dir)
        kind = _kind(run_dir, metrics)
        found.append({"name": run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name,
                      "dir": run_dir, "command_path": command_path(run_dir), "kind": kind, "metrics": metrics, "config": config,
                      "settings": settings(kind, config), "history": history,
                      "unfinished": _unfinished_note(run_dir, kind, metrics, config, history, damaged)})
    return found


# where a run lands, not what it computes: never a difference worth a column
NOT_SETTINGS = ("out",)
# What a run written before a key existed did, where today's default differs (channels-last came as an opt-in)
WRITTEN_BEFORE = {"train.channels_last": "false"}


def _defaults(kind: str) -> dict:
    """Flat default config of fgvc's classifier (``fgvc.config.Config``) or GAN (``GanConfig``) runs."""
    import dataclasses

    if kind == "gan":  # the GAN package (and the training stack it uses) loads only for a GAN run
        from fgvc.gan.config import GanConfig

        return flatten(dataclasses.asdict(GanConfig()))
    return flatten(config_mod.to_dict(config_mod.Config()))


def settings(kind: str, config: dict) -> dict:
    """The run's flat settings: its config.yaml over today's defaults, so that a key added to fgvc after the
    run was written (missing from its config.yaml) reads as the default the run had, not as a difference;
    ``NOT_SETTINGS`` left out. {} when the run has no config.yaml."""
    if not config:
        return {}
    defaults = _defaults(kind) if kind in ("classifier", "gan") else {}
    if kind == "classifier":
        defaults = {**defaults, **WRITTEN_BEFORE}
    own = {k: ("true" if v else "false") if isinstance(v, bool) and isinstance(defaults.get(k), str) else v
           for k, v in flatten(config).items()}  # a bool key that became a word (train.channels_last: false)
    return {k: v for k, v in {**defaults, **own}.items() if k not in NOT_SETTINGS}


def config_differences(entries: list[dict]) -> list[str]:
    """Dotted config keys whose values are not the same in every entry's ``settings`` (runs without a
    config.yaml are left out of the comparison)."""
    return differing_fields([e["settings"] for e in entries if e["settings"]])


def compact(value, width: int = 40) -> str:
    """A config value in a few characters: lists as [a,b], long strings (paths) cut at the front with ..."""
    if isinstance(value, list):
        text = "[" + ",".join(compact(v, width) for v in value) + "]"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif value is None or value == "":
        text = "''" if value == "" else "-"
    else:
        text = str(value)
    return text if len(text) <= width else "..." + text[-(width - 3):]


def differing_values(entry: dict, keys: list[str]) -> str:
    """``key=value, key=value`` of an entry for the given dotted keys ('' when there are none)."""
    if not entry["settings"]:
        return "(config.yaml missing or unreadable)" if keys else ""
    return ", ".join(f"{k}={compact(entry['settings'].get(k))}" for k in keys)
