"""Experiment logs: ``train.loggers=csv,tensorboard[,mlflow,wandb]`` for the classifier, CLIP and the GAN.

CSV and TensorBoard are Lightning Fabric's own loggers (``lightning_fabric.loggers``; TensorBoard
writes through ``tensorboardX``, or ``tensorboard`` when installed). MLflow and Weights & Biases are
thin adapters to their clients behind Fabric's ``Logger`` interface, used only when installed and
offline by default (an MLflow file store and W&B offline mode inside the run directory).
Everything goes under ``<run_dir>/logs/<name>/``.

``open_loggers`` returns an ``ExperimentLog``: ``log_hparams``, ``log_step``, ``log_epoch``,
``close``; it does nothing in the extra processes of a multi-device run, and a resumed run appends
to the same logs with its step numbers continued.

Lightning and the logging packages are imported only when a logger is opened.
"""

from __future__ import annotations

import csv
import difflib
import importlib.util
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from fgvc.devices import is_main_process
from fgvc.errors import UserError
from fgvc.runs import write_text_atomic

# name -> (the packages it can write through, in order of preference; what to pip install)
LOGGERS: dict[str, tuple[tuple[str, ...], str]] = {
    "csv": ((), ""),
    "tensorboard": (("tensorboardX", "tensorboard"), "tensorboardX"),
    "mlflow": (("mlflow",), "mlflow"),
    "wandb": (("wandb",), "wandb"),
}

_CSV_FILE = "metrics.csv"  # Fabric's CSVLogger file name


def parse_loggers(text: str, key: str = "train.loggers") -> list[str]:
    """``"csv, tensorboard"`` -> ``["csv", "tensorboard"]`` (order kept, repeats dropped, "" -> []).

    Raises UserError naming the unknown logger, the closest known one and every choice.
    """
    names: list[str] = []
    for raw in str(text).strip().strip("[]").split(","):
        name = raw.strip().lower()
        if not name or name in names:
            continue
        if name not in LOGGERS:
            close = difflib.get_close_matches(name, list(LOGGERS), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{key}={text}: unknown logger {name!r}{hint}; choose from {', '.join(LOGGERS)} "
                            "(comma-separated, for example csv,tensorboard)")
        names.append(name)
    return names


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules counts as missing
        return False


def require_installed(text: str, key: str = "train.loggers") -> list[str]:
    """The parsed names; raises UserError saying what to pip install for a logger whose package is missing."""
    names = parse_loggers(text, key)
    for name in names:
        modules, package = LOGGERS[name]
        if modules and not any(_installed(m) for m in modules):
            raise UserError(f"{key}={text} asks for the {name} logger, whose package is not installed; "
                            f"run `pip install {package}` (or drop {name} from {key})")
    return names


def flat_hparams(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"train.lr": 5e-05, "train.milestones": "[30, 60]", ...}``: dotted keys, and
    values TensorBoard's hparams accept (int, float, str, bool; anything else as its str)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat_hparams(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, bool | int | float | str) else str(v)
    return out


class ExperimentLog:
    """The loggers of one run, driven by the training loops.

    Tags: ``step/loss`` (or ``step/<name>`` per entry of a loss dict) and ``step/lr`` per optimizer
    step; ``epoch/<metric>`` and ``epoch`` per epoch, logged at the epoch's last step (Lightning's
    convention). Steps are 1-based counts of optimizer steps (GAN: generator updates).
    An ``ExperimentLog`` without loggers (none asked for, or a process other than the first)
    does nothing, and converts nothing: no device sync for a loss tensor.
    """

    def __init__(self, loggers: Sequence[Any] = (), hparams_file: Path | None = None,
                 hparam_metrics: Sequence[str] = (), start_step: int = 0):
        self.loggers = list(loggers)
        self.hparams_file = hparams_file  # the CSV logger's hparams.yaml (Fabric's CSVLogger has none)
        self.hparam_metrics = tuple(hparam_metrics)
        self.last_step = start_step  # the last step logged: a loop without its own count logs last_step + 1

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def log_hparams(self, config: dict) -> None:
        """The resolved config (a nested dict, e.g. ``fgvc.config.to_dict(cfg)``) as hyper-parameters."""
        if not self.loggers:
            return
        if self.hparams_file is not None:
            write_text_atomic(self.hparams_file, yaml.safe_dump(config, sort_keys=False))
        params = flat_hparams(config)
        for logger in self.loggers:
            if _is_tensorboard(logger):
                _tensorboard_hparams(logger, params, self.hparam_metrics)
            elif not _is_csv(logger):
                logger.log_hyperparams(params)

    def log_step(self, step: int, loss, lr: float) -> None:
        """One optimizer step: ``loss`` a float or 0-d tensor, or {name: loss}; ``lr`` the rate it trained at."""
        if not self.loggers:
            return
        losses = loss if isinstance(loss, dict) else {"loss": loss}
        metrics = {f"step/{k}": float(v) for k, v in losses.items()}
        metrics["step/lr"] = float(lr)
        self.last_step = int(step)
        self._log(metrics, self.last_step)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """One epoch's metrics (1-based ``epoch``; numbers only, others skipped), at the last step logged."""
        if not self.loggers:
            return
        row = {f"epoch/{k}": float(v) for k, v in metrics.items()
               if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)}
        row["epoch"] = float(epoch)
        self._log(row, self.last_step)
        self.flush()  # an epoch's rows reach the disk with its checkpoint

    def flush(self) -> None:
        """Write what the loggers hold in memory (CSV rows, TensorBoard events); call it at checkpoints,
        so that a resumed run finds every step up to its checkpoint in the logs."""
        for logger in self.loggers:
            logger.save()

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def close(self, status: str = "success") -> None:
        """Flush and close every logger (``status``: success or failed; MLflow and W&B record it)."""
        loggers, self.loggers = self.loggers, []
        for logger in loggers:
            logger.finalize(status)

    def __enter__(self) -> ExperimentLog:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close("success" if kind is None else "failed")


def open_loggers(spec: str, run_dir: str | Path, *, start_step: int = 0, main: bool | None = None,
                 key: str = "train.loggers", run_name: str | None = None,
                 hparam_metrics: Sequence[str] = ("epoch/val_acc", "epoch/val_loss")) -> ExperimentLog:
    """The loggers ``spec`` names (e.g. ``"csv,tensorboard"``), writing under ``<run_dir>/logs/<name>/``.

    ``start_step``: steps already logged by an earlier process of this run (0 for a new run); a
    resumed run keeps the logs up to it and continues after it (CSV rows past it are dropped,
    TensorBoard purges later events). ``main``: whether this is the first process (default:
    ``fgvc.devices.is_main_process()``); the others get an ``ExperimentLog`` that does nothing.
    ``hparam_metrics``: the tags TensorBoard's HPARAMS tab shows beside the hyper-parameters.
    Raises UserError for an unknown name or a logger whose package is missing.
    """
    names = require_installed(spec, key)
    if main is None:
        main = is_main_process()
    if not names or not main:
        return ExperimentLog()
    root = Path(run_dir) / "logs"
    run_name = run_name or Path(run_dir).resolve().name
    loggers, hparams_file = [], None
    for name in names:
        if name == "csv":
            loggers.append(_csv_logger(root, start_step))
            hparams_file = root / "csv" / "hparams.yaml"
        elif name == "tensorboard":
            from lightning_fabric.loggers import TensorBoardLogger

            # name "" and a string version: the event files go straight into logs/tensorboard/; purge_step
            # hides the events of earlier files from that step on (also a run started over: step 1)
            loggers.append(TensorBoardLogger(root, name="", version="tensorboard", default_hp_metric=False,
                                             purge_step=start_step + 1))
        elif name == "mlflow":
            loggers.append(_make_mlflow_logger(root / "mlflow", run_name))
        else:
            loggers.append(_make_wandb_logger(root / "wandb", run_name))
    return ExperimentLog(loggers, hparams_file, hparam_metrics, start_step)


def optimizer_steps(optimizer) -> int:
    """Steps ``optimizer`` has taken, from its own state (Adam and AdamW keep a per-parameter ``step``,
    saved and restored with it): 0 for a fresh one. A resumed run's logs continue from this count."""
    return max((int(s["step"]) for s in optimizer.state.values() if "step" in s), default=0)


def _csv_logger(root: Path, start_step: int):
    """Fabric's CSVLogger in ``logs/csv/``. Fabric empties an existing metrics.csv when it opens the
    folder: a resumed run's rows up to ``start_step`` are read first and logged again."""
    from lightning_fabric.loggers import CSVLogger

    path = root / "csv" / _CSV_FILE
    kept = []
    if start_step and path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                values = {k: float(v) for k, v in row.items() if k and v not in ("", None)}
                step = values.pop("step", math.inf)
                if step <= start_step:
                    kept.append((int(step), values))
    logger = CSVLogger(root, name="", version="csv")
    with warnings.catch_warnings():  # Fabric's "will be deleted" warning: the rows kept are logged again here
        warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted")
        _ = logger.experiment  # opened now, before hparams.yaml joins metrics.csv in the folder
    for step, values in kept:
        logger.log_metrics(values, step=step)
    if kept:
        logger.save()
    return logger


def _is_csv(logger) -> bool:
    from lightning_fabric.loggers import CSVLogger

    return isinstance(logger, CSVLogger)


def _is_tensorboard(logger) -> bool:
    from lightning_fabric.loggers import TensorBoardLogger

    return isinstance(logger, TensorBoardLogger)


def _tensorboard_hparams(logger, params: dict, metric_tags: Sequence[str]) -> None:
    """The HPARAMS-tab record, linked to ``metric_tags`` (scalars logged as training goes). Fabric's
    ``log_hyperparams`` would also log a placeholder value under each tag (-1 by default), which
    would then sit in the real curve; here only the hparams summaries are written, as Fabric does
    after its placeholder."""
    # the summary module of the writer Fabric chose (`tensorboard` when installed, else tensorboardX)
    if type(logger.experiment).__module__.startswith("tensorboardX"):
        from tensorboardX.summary import hparams
    else:
        from torch.utils.tensorboard.summary import hparams
    exp, ssi, sei = hparams(params, dict.fromkeys(metric_tags, 0.0))
    writer = logger.experiment._get_file_writer()
    for summary in (exp, ssi, sei):
        writer.add_summary(summary)
    logger.experiment.flush()


def _lightning_logger_base():
    from lightning_fabric.loggers import Logger

    return Logger


def _run_id(save_dir: Path, make) -> str:
    """The id stored in ``save_dir/run_id``, or ``make()``'s, stored."""
    path = save_dir / "run_id"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    run_id = make()
    write_text_atomic(path, run_id + "\n")
    return run_id


def _make_mlflow_logger(save_dir: Path, run_name: str):
    """MLflow through ``mlflow.MlflowClient``: ``MLFLOW_TRACKING_URI`` when set, otherwise a file store
    in ``save_dir`` (open it with ``mlflow ui --backend-store-uri <save_dir>``). The MLflow run id is
    kept in ``save_dir/run_id`` so that a resumed fgvc run logs into the same MLflow run."""
    import mlflow
    from mlflow.entities import Metric, Param

    Base = _lightning_logger_base()

    class _MLflow(Base):
        def __init__(self):
            super().__init__()
            save_dir.mkdir(parents=True, exist_ok=True)
            uri = os.environ.get("MLFLOW_TRACKING_URI") or save_dir.resolve().as_uri()
            self.client = mlflow.MlflowClient(tracking_uri=uri)
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "fgvc")

            def create() -> str:
                found = self.client.get_experiment_by_name(experiment)
                exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
                return self.client.create_run(exp_id, run_name=run_name).info.run_id

            self.run_id = _run_id(save_dir, create)

        @property
        def name(self) -> str:
            return "mlflow"

        @property
        def version(self) -> str:
            return self.run_id

        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            import time

            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step or 0)
                                                        for k, v in metrics.items()])

        def log_hyperparams(self, params: dict, *args, **kwargs) -> None:
            # MLflow params cannot change: on resume only the new keys are logged (config.yaml has the rest)
            have = self.client.get_run(self.run_id).data.params
            new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in have]
            for i in range(0, len(new), 100):  # log_batch takes at most 100 params
                self.client.log_batch(self.run_id, params=new[i:i + 100])

        def finalize(self, status: str) -> None:
            self.client.set_terminated(self.run_id, "FINISHED" if status == "success" else "FAILED")

    return _MLflow()


def _make_wandb_logger(save_dir: Path, run_name: str):
    """Weights & Biases through ``wandb.init`` in ``save_dir``, offline unless ``WANDB_MODE`` says
    otherwise (``wandb sync <save_dir>/wandb/offline-run-*`` uploads later). The W&B run id is kept
    in ``save_dir/run_id`` so that a resumed fgvc run logs into the same W&B run."""
    import wandb

    Base = _lightning_logger_base()

    class _Wandb(Base):
        def __init__(self):
            super().__init__()
            save_dir.mkdir(parents=True, exist_ok=True)
            run_id = _run_id(save_dir, wandb.util.generate_id)
            self.run = wandb.init(dir=str(save_dir), name=run_name, id=run_id, resume="allow",
                                  project=os.environ.get("WANDB_PROJECT", "fgvc"),
                                  mode=os.environ.get("WANDB_MODE", "offline"))

        @property
        def name(self) -> str:
            return "wandb"

        @property
        def version(self) -> str:
            return self.run.id

        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            self.run.log(dict(metrics), step=step)

        def log_hyperparams(self, params: dict, *args, **kwargs) -> None:
            self.run.config.update(params, allow_val_change=True)

        def finalize(self, status: str) -> None:
            self.run.finish(exit_code=0 if status == "success" else 1)

    return _Wandb()


__all__ = ["LOGGERS", "ExperimentLog", "flat_hparams", "open_loggers", "optimizer_steps", "parse_loggers",
           "require_installed"]
