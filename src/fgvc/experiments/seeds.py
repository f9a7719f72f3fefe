"""``fgvc study NAME --seeds 0,1,2``: every row once per seed, and a table of mean +- std.

A seeded study runs each row as one run per seed, ``<study>/<row>/seed<S>/`` with
``train.seed=S`` (the seed of the weights' initialisation, the batch order and the draw of
the validation images from train). A study without seeds keeps ``<study>/<row>/``. Each
(row, seed) is a cell: finished cells (``metrics.json`` present) are skipped on a re-run, so
a killed seed is re-run alone.

The table gives, per row and metric, the mean and the sample standard deviation (``ddof=1``,
numpy's ``std(ddof=1)``; empty with a single seed) over the seeds that finished and their
number ``n``; each seed's own values are in ``table_seeds.csv`` and in a second table of
``table.md``. The plot draws the mean as a bar, the std as an error bar and every seed as a dot.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fgvc import runs
from fgvc.errors import UserError
from fgvc.experiments.analyses import analysis_columns, analysis_values
from fgvc.protocol import differing_fields, flatten

# protocol fields that differ between the seeds of a row by design: never a "differing" column
SEED_FIELDS = ("seed", "val_draw.seed", "study_seeds")


def parse_seeds(text) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (or a list of ints, from a study file's ``seeds:``) -> ``[0, 1, 2]``;
    UserError naming the bad part otherwise (not an integer, negative, repeated, empty)."""
    parts = [str(p).strip() for p in (text if isinstance(text, (list, tuple)) else str(text).split(","))]
    seeds: list[int] = []
    for part in parts:
        lo, dash, hi = part.partition("-")
        try:
            span = range(int(lo), int(hi) + 1) if dash and lo else [int(part)]
        except ValueError:
            raise UserError(f"--seeds takes comma-separated integers or ranges such as 0,1,2 or 0-4, not {part!r}") \
                from None
        if not span:
            raise UserError(f"--seeds range {part!r} is empty; write the smaller seed first, e.g. 0-4")
        seeds += list(span)
    if not seeds or any(s < 0 for s in seeds):
        raise UserError(f"--seeds needs one or more seeds of 0 or more, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r} names a seed twice; give each seed once")
    return seeds


def cell_dir(row: str, seed: int | None) -> str:
    """The run folder of one cell, relative to the study folder: ``row`` without seeds, ``row/seed<S>`` with."""
    return row if seed is None else f"{row}/seed{seed}"


def record_seed(run_dir: Path, seed: int, seeds: list[int]) -> None:
    """Write ``seed`` and the study's ``study_seeds`` into the protocol block of ``run_dir``'s metrics.json
    (runs whose writer records no seed, such as linear probes and CLIP runs, get it here); atomic."""
    metrics = runs.read_metrics(run_dir)
    if not metrics:
        return
    protocol = dict(metrics.get("protocol") or {})
    protocol.setdefault("seed", seed)
    protocol["study_seeds"] = list(seeds)
    runs.write_json_atomic(run_dir / "metrics.json", {**metrics, "protocol": protocol})


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample std with ddof=1) of ``values``; std is None for fewer than two values, both None for none."""
    v = np.asarray([x for x in values if isinstance(x, (int, float))], dtype=np.float64)
    if not v.size:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def write_seed_table(folder: Path, rows: list[str], seeds: list[int], columns: list[str], title: str,
                     analyses: dict | None = None, baseline: str | None = None) -> str:
    """table.md / table.csv (mean, std, n per row) and table_seeds.csv (one line per finished seed) of a seeded
    study, read from ``folder/<row>/seed<S>/`` only (metrics.json, and the files of the study's ``analyses``,
    fgvc.experiments.analyses); table.png with the spread. With ``baseline`` (a row), table.md also gives each
    row's paired difference to it (see ``paired_differences``). Returns table.md."""
    analyses = analyses or {}
    columns = [*columns, *analysis_columns(analyses)]
    keys = [*columns, "epochs_run", "seconds"]
    cells = {(r, s): {**m, **analysis_values(folder / cell_dir(r, s), analyses)}
             for r in rows for s in seeds if (m := runs.read_metrics(folder / cell_dir(r, s)))}
    differ = [k for k in differing_fields([m.get("protocol") for m in cells.values()]) if k not in SEED_FIELDS]
    per_seed = [{"row": r, "seed": s, **{k: m.get(k) for k in [*keys, "device"]},
                 **{f"protocol.{k}": flatten(m.get("protocol")).get(k) for k in differ}} for (r, s), m in cells.items()]
    header = ["row", "n", "seeds"] + [f"{c}{suffix}" for c in keys for suffix in ("_mean", "_std")] + ["device"]
    header += [f"protocol.{k}" for k in differ]
    summary, md = [], []
    for r in rows:
        mine = [p for p in per_seed if p["row"] == r]
        if not mine:
            continue
        line = {"row": r, "n": len(mine), "seeds": " ".join(str(p["seed"]) for p in mine)}
        for c in keys:
            line[f"{c}_mean"], line[f"{c}_std"] = mean_std([p[c] for p in mine])
        for k in ["device", *(f"protocol.{k}" for k in differ)]:
            line[k] = " / ".join(dict.fromkeys(str(p[k]) for p in mine))
        summary.append(line)
        md.append([r, str(line["n"]), *(_pm(line[f"{c}_mean"], line[f"{c}_std"], c) for c in keys),
                   line["device"], *(line[f"protocol.{k}"] for k in differ)])
    md_header = ["row", "n", *(f"{c} (mean ± std)" for c in keys), "device", *(f"protocol.{k}" for k in differ)]
    lines = [f"# {title}", "", _md_table(md_header, md), "",
             f"Mean ± sample standard deviation (ddof=1) over the n seeds of each row that finished (seeds "
             f"{', '.join(map(str, seeds))}; a single seed has no std); each run trained with train.seed=S into "
             "<row>/seed<S>/. Written by `fgvc study` from the run directories"
             + ("; protocol.* columns are the protocol fields that differ between rows (seeds aside)." if differ
                else ".")]
    acc_columns = [c for c in columns if c.endswith(("_acc", "_top5"))]
    if summary and acc_columns:
        plot_spread(summary, per_seed, acc_columns, title, folder / "table.png")
        lines += ["", "![accuracy per row](table.png)"]
    if baseline:
        lines += paired_section(per_seed, rows, baseline, [c for c in columns if is_rate(c)])
    lines += ["", "Per seed:", "", _md_table(["row", "seed", *keys],
                                            [[p["row"], str(p["seed"]), *(_fmt(p[c], c) for c in keys)]
                                             for p in per_seed])]
    table = "\n".join(lines) + "\n"
    runs.write_csv_atomic(folder / "table_seeds.csv", per_seed, ["row", "seed", *keys, "device",
                                                                 *(f"protocol.{k}" for k in differ)])
    runs.write_csv_atomic(folder / "table.csv", summary, header)
    runs.write_text_atomic(folder / "table.md", table)
    return table


def is_rate(column: str) -> bool:
    """Whether a column holds an accuracy, a loss or a calibration error (4 decimals, paired differences)."""
    return column.endswith(("acc", "top5", "loss", "_tta")) or "@" in column or column.startswith("test_ece")


def paired_differences(per_seed: list[dict], row: str, baseline: str, column: str) -> list[float]:
    """``column`` of ``row`` minus that of ``baseline`` on each seed both finished (the same seed draws the
    same validation images and batch order, so the difference cancels what the seeds share)."""
    base = {p["seed"]: p[column] for p in per_seed if p["row"] == baseline and isinstance(p[column], (int, float))}
    return [p[column] - base[p["seed"]] for p in per_seed
            if p["row"] == row and p["seed"] in base and isinstance(p[column], (int, float))]


def paired_section(per_seed: list[dict], rows: list[str], baseline: str, columns: list[str]) -> list[str]:
    """table.md lines: per row, the mean ± sample std of its paired differences to ``baseline``, and n pairs."""
    body = []
    for r in rows:
        if r == baseline or not any(p["row"] == r for p in per_seed):
            continue
        diffs = [paired_differences(per_seed, r, baseline, c) for c in columns]
        n = max(map(len, diffs), default=0)
        body.append([r, str(n), *("" if m is None else f"{m:+.4f}" + ("" if sd is None else f" ± {sd:.4f}")
                                  for m, sd in map(mean_std, diffs))])
    if not body:
        return []
    return ["", f"Paired difference to {baseline} (the row minus {baseline} on the same seed; mean ± sample std "
            "over the n seeds both finished; a difference larger than twice its std is one the seeds agree on):",
            "", _md_table(["row", "n", *(f"{c} − {baseline}" for c in columns)], body)]


def _fmt(value, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if is_rate(column) else f"{value:.4g}"
    return str(value)


def _pm(mean, std, column: str) -> str:
    """``mean ± std``; accuracies and losses to 4 decimals, other columns (seconds, img/s) with the std
    to 2 significant digits and the mean to the same decimals (2.33 ± 0.68, not 2.33 ± 0.6788)."""
    if mean is None:
        return ""
    if std is None:
        return _fmt(mean, column)
    if is_rate(column) or not isinstance(mean, float) or not std or not math.isfinite(std):
        return f"{_fmt(mean, column)} ± {_fmt(std, column)}"
    decimals = max(0, 1 - math.floor(math.log10(abs(std))))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def plot_spread(summary: list[dict], per_seed: list[dict], columns: list[str], title: str, path: Path) -> None:
    """Horizontal bars at each row's mean, the sample std as an error bar and each seed's value as a dot."""
    import textwrap

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.45 * len(summary) * max(1, len(columns) / 2) + 1.4))
    ax = fig.add_subplot()
    height = 0.8 / len(columns)
    for j, column in enumerate(columns):
        ys = [i + j * height for i in range(len(summary))]
        means = [s[f"{column}_mean"] or 0.0 for s in summary]
        stds = [s[f"{column}_std"] or 0.0 for s in summary]
        bars = ax.barh(ys, means, height=height, xerr=stds, capsize=3, label=f"{column} (mean ± std)", alpha=0.75)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=6)
        for y, s in zip(ys, summary):
            dots = [p[column] for p in per_seed if p["row"] == s["row"] and isinstance(p[column], (int, float))]
            ax.plot(dots, [y] * len(dots), "o", ms=3.5, color="black", alpha=0.8,
                    label="each seed" if (j, y) == (0, ys[0]) else None)
    ax.set_yticks([i + height * (len(columns) - 1) / 2 for i in range(len(summary))],
                  [f"{s['row']} (n={s['n']})" for s in summary])
    ax.set(xlim=(0, 1.1), xlabel="accuracy")
    ax.set_title(textwrap.fill(title, 80), fontsize=10)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    runs.save_figure(fig, path)


__all__ = ["SEED_FIELDS", "cell_dir", "is_rate", "mean_std", "paired_differences", "paired_section", "parse_seeds",
           "plot_spread", "record_seed", "write_seed_table"]
