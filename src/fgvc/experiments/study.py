"""Studies: one YAML file = one paper table = several training runs -> one table.

A study file names a base recipe, shared overrides and one row per run:

    # fgvc study table4_tricks data.root=~/data
    title: Table 4 - training tricks
    base: cub_resnet50            # a shipped config or a YAML path
    overrides: [model.pretrained=true]
    columns: [val_acc, test_acc]
    rows:
      baseline: []
      geometric: [aug.geometric=true]
      geometric_seed1: {aug.geometric: true, train.seed: 1}   # the same as a mapping of dotted keys

Each row (and the study's ``overrides``) is parsed once, when the file is read, into
``{dotted key: value}`` typed by the config schema (fgvc.config.set_key): a value may hold '='
or ',' (``data.root: /data/run=1``, ``train.milestones: [3, 6]``), and a bad key names its row.

A row may instead be a CLIP run (seed Table 8), a mapping with ``task`` (zeroshot,
clip_probe, clip_finetune), ``model``, ``pretrained`` and any other argument of that
function (``templates``, ``epochs``, ``lr``, ``batch_size`` ...); it uses the study's
``data.name`` and ``data.root`` (``overrides: [data.name=dogs]`` changes them for the row):

      vit_b16_zeroshot: {task: zeroshot, model: ViT-B-16, pretrained: openai}

A row ``{task: probe, overrides: [...]}`` fits a linear probe on the frozen backbone of the
study's config with the row's overrides (``fgvc probe``), the reference a fine-tune should beat.

Runs land in ``<out>/<study>/<row>/``; a row whose ``metrics.json`` exists is skipped, so
an interrupted study continues where it stopped. A finished row whose config.yaml differs from what
the call asks (say a 1-epoch smoke test, then the real study) is refused before anything trains,
never reported as the asked run; settings that do not change what is learned (where the data
lives, the device, loader workers, caches, loggers) are not compared. The table is written as Markdown and CSV,
with a bar plot (table.png).

With seeds (``--seeds 0,1,2``, or ``seeds: [0, 1, 2]`` in the study file) each row runs once per
seed with ``train.seed=S`` into ``<out>/<study>/<row>/seed<S>/``, each (row, seed) skipped when
finished, and the table gives mean +- sample std over the seeds (fgvc.experiments.seeds).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fgvc import config as config_mod
from fgvc import runs
from fgvc.errors import UserError
from fgvc.experiments.seeds import cell_dir, parse_seeds, record_seed, write_seed_table
from fgvc.train.checks import check_names

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
        if key not in ("title", "base", "overrides", "columns", "rows", "seeds"):
            raise UserError(f"study {path} has unknown field {key!r}; use title, base, overrides, columns, rows, "
                            "seeds")
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
    from fgvc.clip import run_linear_probe, run_zeroshot
    from fgvc.clip.finetune import run_finetune

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

    from fgvc.data import resolve_num_workers

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
        from fgvc.clip.finetune import finetune_config

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
    from fgvc.clip.finetune import after_training
    from fgvc.train import train

    if row_kind(spec) == "probe":  # a linear probe on the frozen backbone of the row's config (fgvc.train.probe)
        from fgvc.train.probe import run_probe

        run_probe(cfg, run_dir, progress=progress)
    elif row_kind(spec) == "clip":
        fn, kwargs = clip_row(spec, row, cfg)
        if spec.get("task") == "clip_finetune":  # a training run: resumes from its last committed epoch
            kwargs["resume"] = (run_dir / "checkpoints" / "last_state.pt").is_file()
        fn(out_dir=run_dir, progress=progress, **kwargs)
    else:
        resume = (run_dir / "checkpoints" / "last_state.pt").is_file()
        train(cfg, run_dir=run_dir, resume=resume, progress=progress, after=after_training(cfg, progress))
    if seeds:
        record_seed(run_dir, cfg.train.seed, seeds)


def run_study(name_or_path: str, extra: list[str] = (), only: list[str] | None = None,
              out: str | Path = "runs", progress: bool = True, launcher: str = "sequential",
              launch_options=None, detach: bool = False, seeds: str | list[int] | None = None) -> Path:
    """Train every (selected) row not yet finished, then write table.md / table.csv; returns the study folder.

    ``launcher`` 'local' or 'slurm' submits one job per unfinished row (fgvc.experiments.launch)
    instead of training them one after another here. ``seeds`` ("0,1,2" or a list; default: the study
    file's ``seeds``, else none) runs each row once per seed (``train.seed=S``, folder ``<row>/seed<S>``)
    and writes mean +- std; every (row, seed) is a cell of its own, skipped when finished."""
    name, study = read_study(name_or_path)
    if seeds is not None:
        study["seeds"] = parse_seeds(seeds)
    seed_list = study.get("seeds") or [None]
    rows = list(study["rows"])
    if only:
        unknown = [r for r in only if r not in rows]
        if unknown:
            raise UserError(f"study {name} has no row {unknown[0]!r}; rows: {', '.join(rows)}")
        rows = [r for r in rows if r in only]
    # one cell per (row, seed); the seed goes last, over the study's and the command line's overrides
    row_of, configs = {}, {}
    extra = extra if isinstance(extra, dict) else config_mod.parse_overrides(list(extra))  # parsed once
    for r in rows:  # validate every row before training
        for seed in seed_list:
            row_of[cell_dir(r, seed)] = r
            seed_override = {} if seed is None else {"train.seed": seed}
            configs[cell_dir(r, seed)] = row_config(study, r, {**extra, **seed_override})
    for cell, row in row_of.items():  # CLIP rows checked here too, before anything trains or is submitted
        check_names(configs[cell])  # attack and logger names: the training preflight's, for every row
        if row_kind(study["rows"][row]) == "clip":
            clip_row(study["rows"][row], row, configs[cell])
    folder = Path(out).expanduser() / name
    check_finished_cells(folder, row_of, study, configs)
    if launcher != "sequential":
        from fgvc.experiments.launch import launch_study

        launch_study(name, study, list(row_of), configs, folder.resolve(), launcher, launch_options, detach,
                     rows_of=row_of)
        return folder
    for i, (cell, row) in enumerate(row_of.items()):
        run_dir = folder / cell
        if (run_dir / "metrics.json").is_file():
            print(f"[{i + 1}/{len(row_of)}] {cell}: finished earlier, skipped")
            continue
        print(f"[{i + 1}/{len(row_of)}] {cell}")
        train_row(row, study["rows"][row], configs[cell], run_dir, progress, study.get("seeds"))
        _write(folder, study, name)  # after every row, so a stopped study still has its table so far
    _write(folder, study, name)
    return folder


# keys a finished row may differ in and still be the run asked for: where things live and what runs them
_NOT_COMPARED = ("out", "data.root", "data.num_workers", "data.cache", "data.cache_budget_gb", "data.cache_dir",
                 "train.loggers", "train.devices", "train.accelerator", "train.precision", "train.compile",
                 "train.channels_last", "clip.cache_dir", "clip.offline")


def check_finished_cells(folder: Path, row_of: dict[str, str], study: dict,
                         configs: dict[str, config_mod.Config]) -> None:
    """UserError when a finished cell of ``folder`` ran with other settings than ``configs`` asks (only
    training and probe rows: a CLIP row's folder holds no training config.yaml)."""
    for cell, row in row_of.items():
        run_dir = folder / cell
        if row_kind(study["rows"][row]) == "clip" or not (run_dir / "metrics.json").is_file():
            continue
        if not (run_dir / "config.yaml").is_file():
            continue  # an old or foreign folder: the table reads its metrics as before
        from fgvc.train.state import config_differences

        differ = config_differences(runs.load_config(run_dir), configs[cell])
        # settings the user changed with `fgvc train --resume RUN key=value` (say a smaller batch after
        # running out of GPU memory) are the run's own: kept, and said
        resumed = {k for r in (runs.read_metrics(run_dir) or {}).get("resumes") or [] for k in r.get("changed", {})}
        for k in sorted(resumed & set(differ)):
            print(f"{cell}: finished with {k}={differ[k][0]}, changed on --resume; kept")
        changed = [k for k in differ if k not in _NOT_COMPARED and k not in resumed]
        if changed:
            k, (was, asked) = changed[0], differ[changed[0]]
            more = f" (and {len(changed) - 1} more setting{'s' * (len(changed) > 2)})" if len(changed) > 1 else ""
            raise UserError(f"{run_dir} finished with {k}={was}, but this call asks for {k}={asked}{more}; "
                            "delete that folder to run the row again, pass another --out, or drop the "
                            "override to keep the finished run")


def _write(folder: Path, study: dict, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows, seeds = list(study["rows"]), study.get("seeds")
    columns = study.get("columns") or ["train_acc", "val_acc", "test_acc"]
    cells = [cell_dir(r, s) for r in rows for s in (seeds or [None])]
    ran = _ran_configs(folder, cells)
    defined = [{k: config_mod.get(row_config(study, r), k) for k in _TITLE_KEYS} for r in rows
               if row_kind(study["rows"][r]) != "clip"] if ran else []
    title = ran_title(study.get("title", name), ran, defined)
    if seeds:
        write_seed_table(folder, rows, seeds, columns, title)
    else:
        write_table(folder, rows, columns, title)


# settings a study title may state; the title is corrected to what the rows' config.yaml say ran
_TITLE_KEYS = {"data.image_size": "{} px", "train.epochs": "{} epochs", "model.name": "{}",
               "train.batch_size": "batch {}", "data.name": "{}", "model.pretrained": "{}"}


def _ran_configs(folder: Path, rows: list[str]) -> list[dict]:
    """Flat {key: value} of each finished row's config.yaml (rows without one, such as CLIP rows, left out)."""
    configs = []
    for row in rows:
        path = folder / row / "config.yaml"
        if (folder / row / "metrics.json").is_file() and path.is_file():
            try:
                cfg = config_mod.load(path)
            except UserError:
                continue
            configs.append({key: config_mod.get(cfg, key) for key in _TITLE_KEYS})
    return configs


def ran_title(title: str, configs: list[dict], defined: list[dict] = ()) -> str:
    """The study title with the settings that ran: "96 px" / "20 epochs" in the shipped title become the
    values every finished row used ("varying px" when rows differ), and a "(as run: ...)" tail names
    the image size and epochs when the title does not, and the model, pretraining and dataset when
    every row ran one that none of the study's own rows (``defined``, its rows without overrides) names."""
    import re

    def common(key):
        values = {c[key] for c in configs}
        return values.pop() if len(values) == 1 else None

    if not configs:
        return title
    said = []
    for key, pattern in (("data.image_size", r"\b\d+ ?px\b"), ("train.epochs", r"\b\d+ epochs\b")):
        value = common(key)
        text = _TITLE_KEYS[key].format(value) if value is not None else _TITLE_KEYS[key].format("varying")
        if key == "train.epochs" and value == 1:
            text = "1 epoch"
        if re.search(pattern, title):
            title = re.sub(pattern, text, title)
        else:
            said.append(text)
    for key in ("model.name", "model.pretrained", "data.name") if defined else ():
        value = common(key)
        if value is not None and value not in {d[key] for d in defined}:
            said.append(("pretrained" if value else "from scratch") if key == "model.pretrained" else str(value))
    return f"{title} (as run: {', '.join(said)})" if said else title


def write_table(folder: Path, rows: list[str], columns: list[str], title: str) -> str:
    """Markdown + CSV of the finished rows' metrics, read from their run directories only. Protocol fields
    (metrics.json ``protocol``, see fgvc.protocol) that differ between the rows get a ``protocol.*`` column."""
    from fgvc.protocol import differing_fields, flatten

    finished = {row: m for row in rows if (m := runs.read_metrics(folder / row))}
    differ = differing_fields([m.get("protocol") for m in finished.values()])
    header = ["row", *columns, "epochs_run", "seconds", "device", *(f"protocol.{k}" for k in differ)]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    csv_rows = []
    for row, metrics in finished.items():
        keys = [*columns, "epochs_run", "seconds", "device"]
        protocol = flatten(metrics.get("protocol"))
        values = [metrics.get(c) for c in keys] + [protocol.get(k) for k in differ]
        text = [f"{v:.4f}" if isinstance(v, float) and c.endswith(("acc", "top5", "loss")) else
                "" if v is None else str(v) for c, v in zip(keys + differ, values)]
        lines.append("| " + " | ".join([row, *text]) + " |")
        csv_rows.append(dict(zip(header, [row, *values])))
    lines += ["", "Written by `fgvc study` from the run directories; device is where each row trained"
              + ("; protocol.* columns are the protocol fields that differ between rows." if differ else ".")]
    acc_columns = [c for c in columns if c.endswith(("_acc", "_top5"))]
    if csv_rows and acc_columns:
        _plot_table(csv_rows, acc_columns, title, folder / "table.png")
        lines += ["", "![accuracy per row](table.png)"]
    table = "\n".join(lines) + "\n"
    runs.write_text_atomic(folder / "table.md", table)
    runs.write_csv_atomic(folder / "table.csv", csv_rows, header)
    return table


def _plot_table(rows: list[dict], columns: list[str], title: str, path: Path) -> None:
    """Grouped horizontal bars, one group per row: the gap between train and test accuracy
    (overfitting) and the differences between rows are easier to see than in the table."""
    import textwrap

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.45 * len(rows) * max(1, len(columns) / 2) + 1.4))
    ax = fig.add_subplot()
    height = 0.8 / len(columns)
    for j, column in enumerate(columns):
        values = [r.get(column) if isinstance(r.get(column), (int, float)) else 0.0 for r in rows]
        bars = ax.barh([i + j * height for i in range(len(rows))], values, height=height, label=column)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_yticks([i + height * (len(columns) - 1) / 2 for i in range(len(rows))], [r["row"] for r in rows])
    ax.set(xlim=(0, 1.1), xlabel="accuracy")
    ax.set_title(textwrap.fill(title, 80), fontsize=10)  # wrapped, not cut
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    runs.save_figure(fig, path)
