"""A study's table: table.md, table.csv and table.png from the run folders of its finished rows, read only
(never re-run), under the study's title corrected to the settings that ran."""

from __future__ import annotations

from pathlib import Path

from fgvc import config as config_mod
from fgvc import runs
from fgvc.errors import UserError
from fgvc.experiments.analyses import analysis_columns, analysis_values
from fgvc.experiments.rows import row_config, row_kind
from fgvc.experiments.seeds import cell_dir, is_rate, write_seed_table
from fgvc.protocol import differing_fields, flatten


def write_tables(folder: Path, study: dict, name: str) -> None:
    """table.md / table.csv / table.png of the study's finished cells (mean +- std over seeds for a seeded
    study), under a title corrected to what ran (``ran_title``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, seeds = list(study["rows"]), study.get("seeds")
    columns = study.get("columns") or ["train_acc", "val_acc", "test_acc"]
    cells = [cell_dir(r, s) for r in rows for s in (seeds or [None])]
    ran = _ran_configs(folder, cells)
    defined = [{k: config_mod.get(row_config(study, r), k) for k in _TITLE_KEYS} for r in rows
               if row_kind(study["rows"][r]) != "clip"] if ran else []
    title = ran_title(study.get("title", name), ran, defined)
    if seeds:
        write_seed_table(folder, rows, seeds, columns, title, study.get("analyses"), study.get("baseline"))
    else:
        write_table(folder, rows, columns, title, study.get("analyses"))


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


def write_table(folder: Path, rows: list[str], columns: list[str], title: str, analyses: dict | None = None) -> str:
    """Markdown + CSV of the finished rows' metrics, read from their run directories only (metrics.json and the
    files of the study's ``analyses``). Protocol fields (metrics.json ``protocol``, see fgvc.protocol) that
    differ between the rows get a ``protocol.*`` column."""
    analyses = analyses or {}
    columns = [*columns, *analysis_columns(analyses)]
    finished = {row: {**m, **analysis_values(folder / row, analyses)}
                for row in rows if (m := runs.read_metrics(folder / row))}
    differ = differing_fields([m.get("protocol") for m in finished.values()])
    header = ["row", *columns, "epochs_run", "seconds", "device", *(f"protocol.{k}" for k in differ)]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    csv_rows = []
    for row, metrics in finished.items():
        keys = [*columns, "epochs_run", "seconds", "device"]
        protocol = flatten(metrics.get("protocol"))
        values = [metrics.get(c) for c in keys] + [protocol.get(k) for k in differ]
        text = [f"{v:.4f}" if isinstance(v, float) and is_rate(c) else
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
