"""A study's rows: reading a study file (``read_study``), each row's config (``row_config``) or CLIP call
(``clip_row``), and running one row into its folder (``train_row``), for the sequential study and for every
launcher's job alike (fgvc.experiments.study, fgvc.experiments.launch). The file format is described in
fgvc.experiments.study."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import fgvc.train
from fgvc import config as config_mod
from fgvc.clip import run_linear_probe, run_zeroshot
from fgvc.clip.finetune import after_training, finetune_config, run_finetune
from fgvc.data import resolve_num_workers
from fgvc.errors import UserError
from fgvc.experiments.analyses import parse_analyses
from fgvc.experiments.seeds import parse_seeds, record_seed
from fgvc.train.probe import run_probe

# the fields of a study file (fgvc.experiments.study's docstring; analyses: fgvc.experiments.analyses)
FIELDS = ("title", "base", "overrides", "columns", "rows", "seeds", "baseline", "analyses")
STUDY_DIR = Path(__file__).resolve().parent.parent / "configs" / "studies"


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def read_study(name_or_path: str) -> tuple[str, dict]:
    """(name, study) of a shipped study name or a YAML file. Every row comes back as a mapping: ``overrides``
    ({dotted key: typed value}, see parse_row_overrides) and, for a CLIP or probe row, its ``task`` and arguments;
    the study's ``overrides`` as {dotted key: typed value}. UserError naming the file (and row) when invalid."""
    path = Path(name_or_path)
    if not path.is_file():
        path = STUDY_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(f"no study {name_or_path!r}; choose one of {', '.join(study_names())} or give a YAML file")
    study = config_mod.read_yaml(path)
    rows = study.get("rows")
    if not isinstance(rows, dict) or not rows:
        raise UserError(f"study {path} needs a 'rows' mapping of row name -> list of key=value overrides")
    for key in study:
        if key not in FIELDS:
            raise UserError(f"study {path} has unknown field {key!r}; use {', '.join(FIELDS)}")
    if study.get("baseline") is not None and (not isinstance(study["baseline"], str) or study["baseline"] not in rows):
        raise UserError(f"study {path}: baseline {study['baseline']!r} is not one of its rows ({', '.join(rows)})")
    study["analyses"] = parse_analyses(study.get("analyses"), f"study {path}")
    study["overrides"] = parse_row_overrides(study.get("overrides"), f"study {path}, overrides")
    study["rows"] = {row: _read_row(path, row, spec) for row, spec in rows.items()}
    if study.get("seeds") is not None:
        study["seeds"] = parse_seeds(study["seeds"])
    return path.stem, study


def _read_row(path: Path, row: str, spec) -> dict:
    """One row of the file as {"overrides": {dotted key: value}} plus, for a CLIP or probe row, its task and
    arguments: a list of key=value strings or a mapping of dotted keys is a training row."""
    where = f"study {path}, row {row!r}"
    if spec is None or isinstance(spec, list) or (isinstance(spec, dict) and "task" not in spec):
        return {"overrides": parse_row_overrides(spec, where)}
    if not isinstance(spec, dict):
        raise UserError(f"{where}: give a list of key=value overrides or a CLIP mapping with task and model "
                        "(or a mapping of config keys to values such as {aug.geometric: true})")
    extra = [k for k in spec if k not in ("task", "overrides")]
    if spec["task"] == "probe" and extra:  # a linear probe of the study's backbone (fgvc.train.probe)
        raise UserError(f"{where}: a probe row takes only task and overrides, not {extra[0]!r}")
    return {**spec, "overrides": parse_row_overrides(spec.get("overrides"), where)}


def parse_row_overrides(items: list | dict | None, where: str) -> dict[str, Any]:
    """A row's (or the study's) overrides, ``["aug.geometric=true", ...]`` or ``{aug.geometric: true, ...}``, as
    ``{dotted key: value}`` converted to each key's type (fgvc.config.set_key), parsed once: never turned back
    into text. UserError "<where>: ..." naming the key when it is unknown, mistyped or not key=value."""
    if items is None:
        return {}
    if isinstance(items, list):
        bad = [o for o in items if not isinstance(o, str)]
        if bad:
            raise UserError(f"{where}: override {str(bad[0])[:80]!r} is not key=value (for example train.lr=1e-3)")
    elif not isinstance(items, dict):
        raise UserError(f"{where}: give a list of key=value overrides or a mapping of config keys to values, "
                        f"not {str(items)[:80]!r}")
    scratch, out = config_mod.Config(), {}
    try:
        pairs = config_mod.parse_overrides(items) if isinstance(items, list) else dict(config_mod.leaves(items))
        for key, value in pairs.items():
            config_mod.set_key(scratch, str(key), value)
            out[str(key)] = config_mod.get(scratch, str(key))
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return out


def row_kind(spec: dict) -> str:
    """'train', 'probe' or 'clip' for a row as read_study returns it."""
    task = spec.get("task")
    return "train" if task is None else "probe" if task == "probe" else "clip"


def _clip_tasks() -> dict:
    return {"zeroshot": run_zeroshot, "clip_probe": run_linear_probe, "clip_finetune": run_finetune}


# set by the study from its data config, never by a row
_CLIP_FIXED = ("model_name", "pretrained", "dataset_name", "root", "out_dir", "val_fraction", "seed", "progress",
               "resume", "overrides")


def row_config(study: dict, row: str, extra: list[str] | dict = ()) -> config_mod.Config:
    """The validated config of a row of ``study`` (as read_study returns it): the base recipe <- the study's
    overrides <- the row's <- ``extra`` (command-line ``key=value`` strings or {dotted key: value})."""
    base = study.get("base")
    base_path = None
    if base:
        base_path = Path(base) if Path(base).is_file() else config_mod.shipped_config(base)
    extra = extra if isinstance(extra, dict) else config_mod.parse_overrides(list(extra))
    return config_mod.load(base_path, {**study.get("overrides", {}), **study["rows"][row].get("overrides", {}),
                                       **extra})


def clip_row(spec: dict, row: str, cfg: config_mod.Config):
    """(function, keyword arguments) of a CLIP row, checked against the function's signature."""
    import torch

    spec = dict(spec)
    tasks = _clip_tasks()
    task = spec.pop("task", None)
    not_data = [k for k in spec.pop("overrides", None) or {} if not k.startswith("data.")]
    if not_data:
        raise UserError(f"study row {row!r}: a CLIP row takes only data.* overrides, not {not_data[0]!r}; "
                        "give the CLIP function's own arguments (epochs, lr, batch_size ...) as row keys")
    if task not in tasks:
        raise UserError(f"study row {row!r}: task must be one of {', '.join(tasks)} (or give a list of key=value "
                        f"overrides for a training run), not {task!r}")
    if "model" not in spec:
        raise UserError(f"study row {row!r}: name the CLIP model, e.g. model: ViT-B-16")
    fn = tasks[task]
    if task == "clip_finetune":  # run_finetune passes its keyword arguments on to the config it trains
        fn_params = {**inspect.signature(finetune_config).parameters, **inspect.signature(fn).parameters}
    else:
        fn_params = inspect.signature(fn).parameters
    defaults = {name: p.default for name, p in fn_params.items() if p.kind is not p.VAR_KEYWORD}
    allowed = [p for p in defaults if p not in _CLIP_FIXED]
    kwargs = {"model_name": spec.pop("model"), "pretrained": spec.pop("pretrained", "openai")}
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        raise UserError(f"study row {row!r}: {task} has no argument {unknown[0]!r}; use {', '.join(allowed)}")
    for k, v in spec.items():  # checked before any row runs, not halfway through the study
        want = type(defaults[k])
        if want in (int, float, str, bool) and not (isinstance(v, want) or (want is float and isinstance(v, int))):
            raise UserError(f"study row {row!r}: {k} must be a {want.__name__}, not {v!r}")
    kwargs.update(spec, dataset_name=cfg.data.name, root=cfg.data.root, val_fraction=cfg.data.val_fraction,
                  seed=cfg.train.seed)
    kwargs.setdefault("num_workers", resolve_num_workers(cfg.data.num_workers, torch.cuda.is_available()))
    return fn, kwargs


def train_row(row: str, spec, cfg: config_mod.Config, run_dir: Path, progress: bool = True,
              seeds: list[int] | None = None) -> None:
    """One row's run into ``run_dir`` (a training run resumes from its last committed epoch).
    The sequential study and every launcher's job (fgvc.experiments.launch.run_row) run rows here.
    With ``seeds`` (a seeded study) the run's metrics.json protocol records its seed and the study's seeds."""
    if row_kind(spec) == "probe":  # a linear probe on the frozen backbone of the row's config (fgvc.train.probe)
        run_probe(cfg, run_dir, progress=progress)
    elif row_kind(spec) == "clip":
        fn, kwargs = clip_row(spec, row, cfg)
        if spec.get("task") == "clip_finetune":  # a training run: resumes from its last committed epoch
            kwargs["resume"] = (run_dir / "checkpoints" / "last_state.pt").is_file()
        fn(out_dir=run_dir, progress=progress, **kwargs)
    else:
        resume = (run_dir / "checkpoints" / "last_state.pt").is_file()
        fgvc.train.train(cfg, run_dir=run_dir, resume=resume, progress=progress, after=after_training(cfg, progress))
    if seeds:
        record_seed(run_dir, cfg.train.seed, seeds)
