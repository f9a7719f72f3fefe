"""`fgvc report RUNS_DIR`: one Markdown + HTML page over every run directory below a folder.

It reads only files the other commands wrote (metrics.json, history.csv, config.yaml,
attack/*.json, explain/localization.json, study table.md) and draws two plots:
validation accuracy per epoch for every training run, and test accuracy per run.
"""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path

from fgvc import runs
from fgvc.errors import UserError
from fgvc.protocol import differing_fields, flatten

COLUMNS = ("train_acc", "val_acc", "test_acc", "test_top5", "best_epoch", "epochs_run", "seconds",
           "train_images_per_second", "params_trainable")


def collect_runs(root: Path) -> list[dict]:
    """Every folder below root holding a metrics.json, with its metrics and a few config facts."""
    found = []
    for metrics_path in sorted(Path(root).rglob("metrics.json")):
        run_dir = metrics_path.parent
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a foreign or damaged file is not a run; the report lists what it can read
        if not isinstance(metrics, dict):
            continue
        entry = {"name": str(run_dir.relative_to(root)) or run_dir.name, "dir": run_dir, "metrics": metrics,
                 "kind": metrics.get("task", "train")}
        if (run_dir / "config.yaml").is_file() and entry["kind"] == "train":
            try:
                cfg = runs.load_config(run_dir)
                entry.update(model=cfg.model.name, data=cfg.data.name, size=cfg.data.image_size)
            except UserError:
                pass  # written by another fgvc version: show its metrics without config facts
        found.append(entry)
    return found


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1.0 else f"{value:.1f}"
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _plots(train_runs: list[dict], out: Path) -> list[str]:
    from matplotlib.figure import Figure

    images = []
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for run in train_runs:
        hist = _history(run["dir"])
        if hist:
            ax.plot([int(h["epoch"]) for h in hist], [float(h["val_acc"]) for h in hist], label=run["name"][-40:])
    if ax.lines:
        ax.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1), title="Validation accuracy per epoch")
        ax.grid(alpha=0.3)
        if len(ax.lines) <= 12:
            ax.legend(fontsize=7)
        runs.save_figure(fig, out / "report_val_acc.png", dpi=110)
        images.append("report_val_acc.png")
    scored = [r for r in train_runs if isinstance(r["metrics"].get("test_acc"), float)]
    if scored:
        fig = Figure(figsize=(7, 0.35 * len(scored) + 1.2))
        ax = fig.add_subplot()
        ax.barh([r["name"][-40:] for r in scored], [r["metrics"]["test_acc"] for r in scored])
        ax.set(xlabel="test accuracy", xlim=(0, 1), title="Test accuracy (best checkpoint)")
        ax.invert_yaxis()
        runs.save_figure(fig, out / "report_test_acc.png", dpi=110)
        images.append("report_test_acc.png")
    return images


def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write report.md and report.html into ``out`` (default: root); returns the Markdown path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass the folder holding your run directories (e.g. runs)")
    entries = collect_runs(root)
    if not entries:
        raise UserError(f"no run directories (folders with metrics.json) under {root}; train something first")
    out = Path(out).expanduser() if out else root
    out.mkdir(parents=True, exist_ok=True)
    train_runs = [e for e in entries if e["kind"] == "train"]
    sections = [f"# fgvc report: {root.name}", "", f"{len(entries)} run(s) found below `{root.name}`.", ""]
    if train_runs:
        differ = differing_fields([e["metrics"].get("protocol") for e in train_runs])
        rows = [[e["name"], e.get("model", ""), e.get("data", ""), _fmt(e.get("size")),
                 *(_fmt(e["metrics"].get(c)) for c in COLUMNS), _fmt(e["metrics"].get("device")),
                 *(_fmt(flatten(e["metrics"].get("protocol")).get(k)) for k in differ)] for e in train_runs]
        header = ["run", "model", "data", "px", *COLUMNS, "device", *(f"protocol.{k}" for k in differ)]
        sections += ["## Training runs", "", _table(header, rows), ""]
        if differ:
            sections += ["protocol.* columns: the protocol fields (metrics.json `protocol`) that differ between "
                         "these runs.", ""]
    others = [e for e in entries if e["kind"] != "train"]
    if others:
        differ = differing_fields([e["metrics"].get("protocol") for e in others])
        rows = []
        for e in others:
            accs = {k: v for k, v in e["metrics"].items() if k.endswith(("_acc", "_top5")) and isinstance(v, float)}
            protocol = flatten(e["metrics"].get("protocol"))
            rows.append([e["name"], e["kind"], ", ".join(f"{k} {v:.4f}" for k, v in accs.items()),
                         ", ".join(f"{k}={_fmt(protocol.get(k))}" for k in differ)])
        sections += ["## Zero-shot, probes and other runs", "",
                     _table(["run", "task", "accuracy", "protocol differences"], rows), ""]
    evals = _eval_rows(entries)
    if evals:
        sections += ["## Evaluations (fgvc eval)", "",
                     _table(["run", "split", "acc", "TTA acc (mode)", "test ECE before -> after",
                             "test NLL before -> after", "T (fitted on val)", "unknown AUROC msp / energy / max logit"],
                            evals), "",
                     "The plain accuracy is the single centre crop; TTA accuracy is reported beside it with its mode.",
                     ""]
    for e in entries:
        for attack in sorted((e["dir"] / "attack").glob("*.md")):
            sections += [f"## Attack: {e['name']}", "", attack.read_text(encoding="utf-8").split("\n", 2)[-1], ""]
        loc = e["dir"] / "explain" / "localization.json"
        if loc.is_file():
            scores = json.loads(loc.read_text(encoding="utf-8"))
            methods = scores.get("methods", scores) if isinstance(scores, dict) else {}
            rows = [[m, *(_fmt(v.get(k)) for k in ("energy_in_box", "box_area_share", "pointing_game", "n"))]
                    for m, v in methods.items() if isinstance(v, dict)]
            if rows:
                sections += [f"## Localisation: {e['name']}", "",
                             _table(["method", "energy in box", "box share", "pointing game", "images"], rows), ""]
    for table in sorted(root.rglob("table.md")):
        text = table.read_text(encoding="utf-8").split("\n", 2)[-1]
        # the study's own plot, linked relative to where the report is written
        plot = table.with_name("table.png")
        link = Path(os.path.relpath(plot, out)).as_posix() if plot.is_file() else None
        text = text.replace("![accuracy per row](table.png)", f"![accuracy per row]({link})" if link else "")
        sections += [f"## Study: {table.parent.name}", "", text, ""]
    images = _plots(train_runs, out)
    sections += [f"![{name}]({name})" for name in images]
    text = "\n".join(sections) + "\n"
    runs.write_text_atomic(out / "report.md", text)
    runs.write_text_atomic(out / "report.html", _html(text, root.name))
    return out / "report.md"


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def _eval_rows(entries: list[dict]) -> list[list[str]]:
    """One row per eval_<split>.json that `fgvc eval` wrote: accuracy, TTA beside it, calibration, open set."""
    rows = []
    for e in entries:
        for path in sorted(e["dir"].glob("eval_*.json")):
            try:
                ev = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                continue
            if not isinstance(ev, dict) or "acc" not in ev:
                continue
            tta = ev.get("tta") or {}
            cal = (ev.get("calibration") or {}).get("test") or {}
            before, after = cal.get("before") or {}, cal.get("after") or {}
            scores = (ev.get("openset") or {}).get("scores") or {}
            rows.append([
                e["name"], path.stem[len("eval_"):], _fmt(ev.get("acc")),
                f"{_fmt(tta.get('acc'))} ({tta.get('mode')})" if tta else "",
                f"{_fmt(before.get('ece'))} -> {_fmt(after.get('ece'))}" if cal else "",
                f"{_num(before.get('nll'))} -> {_num(after.get('nll'))}" if cal else "",  # nats: may pass 1
                f"{(ev.get('calibration') or {}).get('temperature', 0):.3f}" if cal else "",
                " / ".join(_fmt((scores.get(k) or {}).get("auroc")) for k in ("msp", "energy", "max_logit"))
                if scores else "",
            ])
    return rows


def _html(markdown: str, title: str) -> str:
    """A small Markdown subset (headings, tables, images, paragraphs) as a standalone page."""
    body, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if all(set(c) <= set("- ") for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            body.append(f'<img src="{html.escape(src)}" alt="{html.escape(src)}">')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
