"""A training run's state between epochs: what ``last_state.pt`` holds, how a run resumes from it,
and how each epoch is committed to the run directory.

An epoch is committed by one atomic file (``checkpoints/last_state.pt``: weights, optimizer,
schedule, history), so a run killed at any moment resumes from its last finished epoch and ends
where an uninterrupted one does (``tests/train/test_resume.py``).
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning_fabric import Fabric

from fgvc import config as config_mod
from fgvc import runs
from fgvc.errors import UserError
from fgvc.train.optim import place_per_step_schedule

RESUME_KEYS = ("epoch", "best_acc", "best_epoch", "history", "optimizer", "scheduler", "train_seconds",
               "train_images")

# Keys `fgvc train --resume RUN key=value` may change once an epoch has finished: each takes effect
# from the next epoch on (the optimizer keys are set in the loaded optimizer and schedule), and the
# change is recorded (metrics.json "resumes", a comment atop config.yaml). Every other key shapes what
# the finished epochs were (model, data, splits, augmentation, seed) and is refused.
RESUMABLE_KEYS = ("train.epochs", "train.patience", "train.batch_size", "train.lr", "train.weight_decay",
                  "train.milestones", "train.gamma", "train.precision", "train.devices", "train.accelerator",
                  "train.channels_last", "data.num_workers", "data.skip_bad_images", "train.loggers",
                  "data.cache", "data.cache_budget_gb", "data.cache_dir", "train.compile", "train.threads",
                  "data.root",  # the same dataset in the folder it moved to (classes.json must still match)
                  "clip.cache_dir", "clip.offline", "clip.wise_ft_alphas")
_OPTIMIZER_KEYS = ("train.lr", "train.weight_decay", "train.milestones", "train.gamma")
_TRAINING_ONLY_KEYS = (*_OPTIMIZER_KEYS, "train.batch_size")  # the others also reach the final test


@dataclass
class TrainState:
    """Where a run stands after its last finished epoch (0-based ``epoch``; -1 before the first)."""

    epoch: int = -1
    best_acc: float = -1.0
    best_epoch: int = -1  # 0-based; its weights are checkpoints/best.safetensors
    history: list[dict] = field(default_factory=list)  # one row per finished epoch (history.csv)
    train_seconds: float = 0.0
    train_images: int = 0
    resumes: list[dict] = field(default_factory=list)  # {"epoch": first epoch run with them, "changed": ...}
    losses: dict = field(default_factory=dict)  # the loss terms' own state (center loss centres; fgvc.train.losses)

    @property
    def probes(self) -> list[dict]:
        """The per-epoch robustness probes (adversarial training), read back from the history."""
        return [{k[len("probe_"):]: v for k, v in h.items() if k.startswith("probe_")} for h in self.history]

    def stops_before(self, epoch: int, t: config_mod.TrainConfig) -> bool:
        """Whether training ends before ``epoch`` (0-based): all epochs done, or early stopping (val
        accuracy has not improved for ``patience`` epochs)."""
        return epoch >= t.epochs or (self.best_epoch >= 0 and t.patience > 0 and epoch - self.best_epoch > t.patience)

    def end_epoch(self, epoch: int, row: dict, seconds: float, images: int) -> bool:
        """Record a finished epoch's history row; True when its val accuracy is the best so far."""
        self.epoch = epoch
        self.history.append(row)
        self.train_seconds += seconds
        self.train_images += images
        improved = row["val_acc"] > self.best_acc  # the same on every process: val sums are shared
        if improved:
            self.best_acc, self.best_epoch = row["val_acc"], epoch
        return improved

    def best_row(self) -> dict:
        return self.history[self.best_epoch] if 0 <= self.best_epoch < len(self.history) else self.history[-1]

    def to_dict(self, model_state: dict, optimizer, scheduler, losses: dict | None = None) -> dict:
        """What ``last_state.pt`` holds: this state plus the epoch's weights, optimizer, schedule and the
        loss terms' state."""
        return {"epoch": self.epoch, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "history": self.history, "model": model_state, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "train_seconds": self.train_seconds,
                "train_images": self.train_images, "resumes": self.resumes, "losses": losses or {}}


def with_absolute_paths(cfg: config_mod.Config) -> config_mod.Config:
    """``cfg`` with data.root (and data.generated_root, when set) made absolute against the current
    folder, so that a run's config.yaml finds its data from wherever the run is read later."""
    import copy
    import os

    values = {k: os.path.abspath(os.path.expanduser(config_mod.get(cfg, k))) for k in ("data.root", "data.generated_root")
              if config_mod.get(cfg, k)}
    return config_mod.apply(copy.deepcopy(cfg), values)  # a copy: the caller's config (a study's row) stays as given


def config_differences(before: config_mod.Config, now: config_mod.Config) -> dict[str, list]:
    """{key: [value in a run's config.yaml (``before``), value asked now]} for the keys that differ, read as
    training writes them: paths absolute (a run from before they were), and model.weights_sha256 only when
    ``now`` names one (training fills it in from the file it loads)."""
    before, now = with_absolute_paths(before), with_absolute_paths(now)
    return {k: [config_mod.get(before, k), config_mod.get(now, k)] for k in config_mod.all_keys()
            if config_mod.get(before, k) != config_mod.get(now, k)
            and not (k == "model.weights_sha256" and not config_mod.get(now, k))}


def resume_changes(cfg: config_mod.Config, run_dir: str | Path) -> dict[str, list]:
    """{key: [value in the run's config.yaml, value now]} for the keys ``cfg`` changes on resume. Once an
    epoch has finished, a key outside RESUMABLE_KEYS is refused: it could not take effect, and
    config.yaml would claim a value the finished epochs never ran with."""
    run_dir = runs.check_run_dir(run_dir)
    root = Path(cfg.data.root).expanduser()
    if not root.exists():
        from fgvc.data import how_to_get

        raise UserError(f"{run_dir} trains on {cfg.data.name} in {root}, which does not exist here; if the dataset "
                        f"moved, resume with its new folder (`fgvc train --resume {run_dir} data.root=NEW`), else "
                        f"{how_to_get(cfg.data.name, root)}")
    if not (run_dir / "checkpoints" / "last_state.pt").is_file():
        return {}  # no finished epoch: the run starts over, every setting takes effect
    changed = config_differences(runs.load_config(run_dir), cfg)
    refused = [k for k in changed if k not in RESUMABLE_KEYS]
    if refused:
        what = ", ".join(f"{k}={changed[k][1]} (the run has {k}={changed[k][0]})" for k in refused)
        raise UserError(f"--resume cannot change {what}: the epochs already finished in {run_dir} were trained "
                        f"with the run's value; drop the override, or start a new run with it (on resume only "
                        f"{', '.join(RESUMABLE_KEYS)} can change)")
    return changed


def finished_run(cfg: config_mod.Config, run_dir: str | Path, changes: dict) -> str | None:
    """A note when ``run_dir`` has finished (trained and tested: metrics.json counts every committed epoch) and
    ``cfg`` asks for no further epoch: the caller changes nothing, so metrics.json (its wall time), config.yaml
    and the plots stay as they are. None when there is training or testing left to do. A setting that
    only acts on training (the optimizer, the batch) is refused: it could not take effect."""
    run_dir = Path(run_dir)
    metrics = runs.read_metrics(run_dir)
    try:  # one row per committed epoch; a later resume that died leaves more rows than metrics.json counts
        rows = len((run_dir / "history.csv").read_text(encoding="utf-8").strip().splitlines()) - 1
    except (OSError, ValueError):
        return None
    if not isinstance(metrics.get("epochs_run"), int) or not isinstance(metrics.get("best_epoch"), int) \
            or metrics["epochs_run"] != rows or rows < 1:
        return None
    done = metrics["epochs_run"]
    state = TrainState(epoch=done - 1, best_epoch=metrics["best_epoch"] - 1)
    if not state.stops_before(done, cfg.train):
        return None
    t = cfg.train
    stopped_early = done < t.epochs
    more = (f"train.patience={done - state.best_epoch}" if stopped_early else f"train.epochs={done + 1}") + " or more"
    training_only = [k for k in changes if k in _TRAINING_ONLY_KEYS]
    if training_only:
        raise UserError(f"{run_dir} has finished training ({done} epochs), so "
                        f"{', '.join(f'{k}={changes[k][1]}' for k in training_only)} would not take "
                        f"effect; add {more} to train on with it")
    why = (f"stopped early after epoch {done}: val accuracy last improved at epoch {state.best_epoch + 1}, "
           f"train.patience={t.patience}" if stopped_early else f"{done} of train.epochs={t.epochs}")
    return (f"{run_dir} has finished training ({why}) and was tested; nothing was changed"
            + (f" ({', '.join(f'{k}={v[1]}' for k, v in changes.items())} not applied)" if changes else "")
            + f"; add {more} to train on")


def open_run_dir(fabric: Fabric, cfg: config_mod.Config, run_dir, resume: bool, class_names: list[str]) -> Path:
    """The run directory: a new one (named by the first process), or the resumed one with the temp
    files of writes a kill cut short removed and its classes checked."""
    if resume:
        run_dir = runs.check_run_dir(run_dir)
        if fabric.is_global_zero:
            for folder in (run_dir, run_dir / "checkpoints"):
                runs.remove_partial_writes(folder)
        if (run_dir / "classes.json").is_file() and runs.load_class_names(run_dir) != class_names:
            raise UserError(f"the classes of {cfg.data.name} in {cfg.data.root} differ from "
                            f"{run_dir / 'classes.json'}; resume with the dataset the run started on")
        return run_dir
    if run_dir is None:
        run_dir = fabric.broadcast(runs.new_run_dir(cfg.out, cfg.model.name, cfg.data.name)
                                   if fabric.global_rank == 0 else None)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def restore(run_dir: Path, cfg: config_mod.Config, changes: dict, model, optimizer, scheduler,
            steps_per_epoch: int | None = None) -> TrainState:
    """The state of the run's last finished epoch, loaded into ``model`` / ``optimizer`` / ``scheduler``
    (a fresh state when no epoch has finished). Settings changed on resume (``changes``) are applied
    and recorded. ``steps_per_epoch``: today's, for a schedule stepped per optimizer step (None for one
    stepped per epoch); it keeps the schedule's epoch fraction when the steps per epoch changed."""
    path = run_dir / "checkpoints" / "last_state.pt"
    if not path.is_file():
        return TrainState()
    saved = runs.load_state(path, required=RESUME_KEYS)
    # the state carries its own epoch's weights: last.safetensors is one epoch newer when a run
    # died between the two writes (states of older fgvc versions lack them)
    weights = saved["model"] if "model" in saved else runs.load_weights(run_dir / "checkpoints" / "last.safetensors")
    try:
        model.load_state_dict(weights)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} does not fit {cfg.model.name} as configured in {run_dir / 'config.yaml'} "
                        f"({e.__class__.__name__}); resume with the model, model.trainable and optimizer "
                        "settings the run started with") from None
    state = TrainState(saved["epoch"], saved["best_acc"], saved["best_epoch"], saved["history"],
                       saved["train_seconds"], saved["train_images"], list(saved.get("resumes", [])),
                       dict(saved.get("losses") or {}))
    if steps_per_epoch:
        place_per_step_schedule(scheduler, optimizer, state.epoch + 1, steps_per_epoch)
    if changes:
        start = state.epoch + 1
        training_only = [k for k in changes if k in _TRAINING_ONLY_KEYS]
        if training_only and state.stops_before(start, cfg.train):
            raise UserError(f"{run_dir} has finished training ({start} epochs), so "
                            f"{', '.join(f'{k}={changes[k][1]}' for k in training_only)} would not take "
                            f"effect; add train.epochs={start + 1} or more to train on with it")
        if any(k in changes for k in _OPTIMIZER_KEYS):
            set_optimizer(optimizer, scheduler, cfg.train)
        state.resumes.append({"epoch": start + 1, "changed": changes})
    return state


def set_optimizer(optimizer, scheduler, t: config_mod.TrainConfig) -> None:
    """Resume with new optimizer settings: the loaded AdamW and schedule states carry the old ones.
    The rate becomes what the new schedule gives at this point (epoch for multistep, step for cosine);
    a group without weight decay (train.filter_bias_and_bn) keeps none."""
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]  # train.head_lr_scale's groups
    scheduler.base_lrs = [t.lr * k for k in scales]
    if isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR):
        scheduler.milestones, scheduler.gamma = Counter(t.milestones), t.gamma
        factor = t.gamma ** bisect.bisect_right(sorted(t.milestones), scheduler.last_epoch)
    else:  # a LambdaLR built from this config (train.schedule=cosine)
        factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group, k in zip(optimizer.param_groups, scales):
        group.update(lr=t.lr * k * factor, initial_lr=t.lr * k,
                     weight_decay=0.0 if group.get("no_decay") else t.weight_decay)
    scheduler._last_lr = [t.lr * k * factor for k in scales]  # what get_last_lr() reports


def config_text(cfg: config_mod.Config, resumes: list[dict]) -> str:
    """config.yaml: the settings, after a comment per resume that changed some, so that the file never
    claims a value for epochs that ran with another."""
    lines = [f"# from epoch {r['epoch']} on (fgvc train --resume): "
             + ", ".join(f"{k}={new} (earlier epochs: {old})" for k, (old, new) in r["changed"].items()) + "\n"
             for r in resumes]
    return "".join(lines) + config_mod.dump(cfg)


def commit_epoch(run_dir: Path, state: dict, improved: bool, history_fields: list[str]) -> None:
    ckpt = run_dir / "checkpoints"
    if improved:
        runs.save_weights(state["model"], ckpt / "best.safetensors")
    # last_state.pt commits the epoch: weights, optimizer and history in one atomic file
    runs.save_state(state, ckpt / "last_state.pt")
    runs.save_weights(state["model"], ckpt / "last.safetensors")
    runs.write_csv_atomic(run_dir / "history.csv", state["history"], history_fields)


def first_process_writes(fabric: Fabric, write, *args) -> None:
    """``write(*args)`` (a file of the run directory) on the first process only, then every process
    learns whether it worked: if it failed, all stop together instead of the others waiting at the
    next collective until the process group times out."""
    error = None
    if fabric.is_global_zero:
        try:
            write(*args)
        except BaseException as e:  # re-raised below, after the others have been told
            error = e
    if fabric.world_size > 1:
        failed = fabric.all_reduce(torch.tensor(float(error is not None), device=fabric.device), reduce_op="max")
        if failed and error is None:
            raise UserError("process 0 could not write the run directory (its message above says why); "
                            "every process stopped")
    if error is not None:
        raise error


def kept(history: list[dict], ckpt: Path) -> str:
    """Where the last good checkpoint is, for messages that stop a run."""
    if not history:
        return "no checkpoint was written"
    return f"the checkpoints of epoch {history[-1]['epoch']} (the last good one) are in {ckpt}"
