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
finished, and the table gives mean +- sample std over the seeds (fgvc.experiments.seeds). With
``baseline: ROW`` a seeded study's table also gives every row's paired difference to that row, seed by seed.

``analyses`` runs ``fgvc eval`` (with test-time augmentation) and ``fgvc attack`` on each finished
training cell and adds their columns to the table (flip-TTA top-1, ECE before and after temperature
scaling, accuracy under attack; fgvc.experiments.analyses)::

    baseline: plain
    analyses:
      eval: {tta: flip}
      attack: {attack: fgsm, eps: [1/255, 2/255], limit: 200}
"""

from __future__ import annotations

from pathlib import Path

from fgvc import config as config_mod
from fgvc import runs
from fgvc.errors import UserError
from fgvc.experiments.analyses import run_analyses
from fgvc.experiments.launch import launch_study
from fgvc.experiments.rows import (
    STUDY_DIR,
    clip_row,
    parse_row_overrides,
    read_study,
    row_config,
    row_kind,
    study_names,
    train_row,
)
from fgvc.experiments.seeds import cell_dir, parse_seeds
from fgvc.experiments.tables import ran_title, write_table, write_tables
from fgvc.train.checks import check_names, check_training
from fgvc.train.state import config_differences


def run_study(name_or_path: str, extra: list[str] = (), only: list[str] | None = None,
              out: str | Path = "runs", progress: bool = True, launcher: str = "sequential",
              launch_options=None, detach: bool = False, seeds: str | list[int] | None = None) -> Path:
    """Train every (selected) row not yet finished, then write table.md / table.csv; returns the study folder.

    ``launcher`` 'local' or 'slurm' submits one job per unfinished row (fgvc.experiments.launch)
    instead of training them one after another here. ``seeds`` ("0,1,2" or a list; default: the study
    file's ``seeds``, else none) runs each row once per seed (``train.seed=S``, folder ``<row>/seed<S>``)
    and writes mean +- std; every (row, seed) is a cell of its own, skipped when finished. The table
    counts the finished cells of those seeds and of the file's, so ``--seeds 1,2`` completes a study
    whose seed 0 ran earlier."""
    name, study = read_study(name_or_path)
    seed_list = study.get("seeds") or [None]
    if seeds is not None:  # these seeds run; the table counts them and the file's (say seed 0 run earlier)
        seed_list = parse_seeds(seeds)
        study["seeds"] = sorted({*(study.get("seeds") or []), *seed_list})
    rows = list(study["rows"])
    if only:
        unknown = [r for r in only if r not in rows]
        if unknown:
            raise UserError(f"study {name} has no row {unknown[0]!r}; rows: {', '.join(rows)}")
        rows = [r for r in rows if r in only]
    # one cell per (row, seed); the seed goes last, over the study's and the command line's overrides; the
    # cells of the table's other seeds are checked against this call's settings too, never mixed in
    row_of, tabled, configs = {}, {}, {}
    extra = extra if isinstance(extra, dict) else config_mod.parse_overrides(list(extra))  # parsed once
    for r in rows:  # validate every row before training
        for seed in study.get("seeds") or seed_list:
            tabled[cell_dir(r, seed)] = r
            if seed in seed_list:
                row_of[cell_dir(r, seed)] = r
            seed_override = {} if seed is None else {"train.seed": seed}
            configs[cell_dir(r, seed)] = row_config(study, r, {**extra, **seed_override})
    for cell, row in row_of.items():  # CLIP rows checked here too, before anything trains or is submitted
        if row_kind(study["rows"][row]) == "train":  # the training preflight, for every row before the first trains
            check_training(configs[cell])
        else:
            check_names(configs[cell])  # attack and logger names
        if row_kind(study["rows"][row]) == "clip":
            clip_row(study["rows"][row], row, configs[cell])
    folder = Path(out).expanduser() / name
    check_finished_cells(folder, tabled, study, configs)
    if launcher != "sequential":
        launch_study(name, study, list(row_of), configs, folder.resolve(), launcher, launch_options, detach,
                     rows_of=row_of)
        return folder
    for i, (cell, row) in enumerate(row_of.items()):
        run_dir = folder / cell
        trained = not (run_dir / "metrics.json").is_file()
        if trained:
            print(f"[{i + 1}/{len(row_of)}] {cell}")
            train_row(row, study["rows"][row], configs[cell], run_dir, progress, study.get("seeds"))
        else:
            print(f"[{i + 1}/{len(row_of)}] {cell}: finished earlier, skipped")
        # eval / attack on the best checkpoint, unless done (a finished cell gets those it lacks)
        analysed = row_kind(study["rows"][row]) == "train" and run_analyses(run_dir, study.get("analyses"), progress)
        if trained or analysed:
            write_tables(folder, study, name)  # after every row, so a stopped study still has its table so far
    write_tables(folder, study, name)
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


__all__ = ["STUDY_DIR", "check_finished_cells", "clip_row", "parse_row_overrides", "ran_title", "read_study",
           "row_config", "row_kind", "run_study", "study_names", "train_row", "write_table", "write_tables"]
