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


def _trained_channels_last(run_dir: Path) -> bool:
    """metrics.json ``channels_last`` (train.channels_last as it ran); False when missing or unreadable."""
    try:
        return bool(read_metrics(run_dir).get("channels_last"))
    except (UserError, AttributeError):  # damaged, or not a mapping: the weights still load
        return False


def read_metrics(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    return _read_json(path) if path.is_file() else {}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path} cannot be read as JSON ({e.__class__.__name__}); the run directory is "
                        "damaged") from None


def load(run_dir: str | Path, checkpoint: str = "best"):
    """``(model, class_names)``: the run's model on [0, 1] images, in eval mode, on the CPU.

    ``model`` maps (B, 3, H, W) float images in [0, 1] (H = W = the run's data.image_size) to (B, C)
    logits, C = ``len(class_names)``; it normalises inside, in the memory order it trained in.
    ``checkpoint``: ``best`` (the epoch with the best val top-1) or ``last``. UserError (one
    sentence) when ``run_dir`` is not a run folder, its config.yaml, classes.json or checkpoint is
    missing or damaged, or the weights do not fit the model its config names."""
    from fgvc.models import create_model
    from fgvc.models.factory import is_clip

    run_dir = check_run_dir(run_dir)
    cfg = load_config(run_dir)
    class_names = load_class_names(run_dir)
    if is_clip(cfg.model.name):  # QuickGELU or not comes with the pretrained tag, not the weights
        from fgvc.clip.classifier import clip_classifier

        model = clip_classifier(cfg.model.name, len(class_names), cfg.model.dropout, cfg.data.image_size,
                                pretrained=cfg.clip.pretrained if cfg.model.pretrained else "")
    else:
        model = create_model(cfg.model.name, len(class_names), pretrained=False, dropout=cfg.model.dropout,
                             image_size=cfg.data.image_size)
    state = load_weights(run_dir / "checkpoints" / f"{checkpoint}.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"checkpoint in {run_dir} does not match model {cfg.model.name} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    if _trained_channels_last(run_dir):  # the memory order it trained and was tested in: the same kernels
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), class_names


class Run:
    """A training run directory read once: what every analysis of it needs (eval, predict, explain,
    attack, serve, export, audits), so none of them re-derives the config, the classes, the eval
    pipeline or the splits on its own.

    ``Run(run_dir)`` checks the folder (config.yaml, classes.json) and raises UserError with the fix
    when it is not a run. ``model()`` builds the network from a checkpoint; ``dataset(split)`` is the
    split the run trained and scored on (its data.name, root, val_fraction, classes and seed);
    ``eval_transform`` the one evaluation preprocessing (fgvc.data.transforms); ``precision`` the
    precision it trained in; ``write_json`` / ``write_text`` / ``save_figure`` write atomically into it.
    """

    def __init__(self, run_dir: str | Path, data_root: str | Path | None = None):
        self.dir = check_run_dir(run_dir)
        self.config = load_config(self.dir)
        self.class_names = load_class_names(self.dir)
        self.data_moved = bool(data_root)
        if data_root:  # the run's dataset, read from the folder it moved to (`fgvc eval RUN data.root=NEW`)
            self.config = config_mod.apply(self.config, {"data.root": os.path.abspath(os.path.expanduser(data_root))})

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    @property
    def metrics(self) -> dict:
        """metrics.json ({} while the run has not finished)."""
        return read_metrics(self.dir)

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    @property
    def eval_transform(self):
        """PIL image -> float (3, S, S) in [0, 1], S = data.image_size: resize the short side to
        S / 0.875, centre crop (fgvc.data.transforms.eval_transform)."""
        from fgvc.data.transforms import eval_transform

        return eval_transform(self.image_size)

    @property
    def precision(self) -> str:
        """The precision the run trained in (metrics.json), else what train.precision resolves to here."""
        if self.metrics.get("precision"):
            return self.metrics["precision"]
        from fgvc.train.devices import resolve_precision

        return resolve_precision(self.config.train.precision, self.config.train.accelerator)

    def dataset(self, split: str, transform=None, root: str | Path | None = None):
        """The run's ``split`` ('train', 'val' or 'test'), through the eval pipeline unless ``transform``
        is given; ``root`` reads the same dataset from another folder (it moved)."""
        from fgvc.data import config_split, how_to_get

        cfg = self.config
        if root is not None:
            cfg = config_mod.apply(config_mod.load(self.dir / "config.yaml"), {"data.root": str(root)})
        d = cfg.data
        if not Path(d.root).expanduser().exists():
            if root is not None or self.data_moved:
                raise UserError(f"data.root={d.root} does not exist; give the folder that now holds the {d.name} "
                                f"dataset {self.dir} was trained on")
            raise UserError(f"{self.dir} was trained on {d.name} in {d.root}, which does not exist here; if the "
                            "dataset moved, add data.root=NEW to the command (`fgvc eval RUN data.root=NEW`; "
                            f"explain and attack take it too), else {how_to_get(d.name, d.root)}")
        return config_split(cfg, split, self.eval_transform if transform is None else transform)

    def model(self, checkpoint: str = "best"):
        """The run's network on [0, 1] images, eval mode, on the CPU (``checkpoint``: best or last)."""
        return load(self.dir, checkpoint)[0]

    def write_json(self, name: str, data) -> Path:
        write_json_atomic(self.dir / name, data)
        return self.dir / name

    def write_text(self, name: str, text: str) -> Path:
        write_text_atomic(self.dir / name, text)
        return self.dir / name

    def save_figure(self, fig, name: str, **kwargs) -> Path:
        return save_figure(fig, self.dir / name, **kwargs)
