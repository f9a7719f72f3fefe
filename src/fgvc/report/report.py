"""`fgvc report RUNS_DIR`: one Markdown + one self-contained HTML page over every run below a folder.

It reads only files the other commands wrote (metrics.json, config.yaml, history.csv, eval_*.json,
explain/, attack/, GAN samples/, study table.md) and never re-runs a model. Sections: classifier
runs (with the config keys and protocol fields that differ between them), the report's comparison
figures, unfinished or failed runs, studies (with the seed paper's numbers beside ours where the
study has them), CLIP / zero-shot / probe runs, GAN runs, evaluations, then one section per run
with every picture its analyses wrote. report.md links the pictures relative to where it is
written; report.html embeds them (fgvc.report.page).
"""

from __future__ import annotations

import re
from pathlib import Path

from fgvc import runs
from fgvc.errors import UserError
from fgvc.protocol import differing_fields, flatten
from fgvc.report import figures, page
from fgvc.report.collect import collect_runs, compact, config_differences, differing_values, evaluations
from fgvc.report.paper import paper_comparison
from fgvc.report.sections import cell, fmt, gan_pictures, link, picture, run_pictures, table

# metrics.json field -> column header of the classifier table
COLUMNS = {"train_acc": "train acc", "val_acc": "val acc", "test_acc": "test acc", "test_top5": "test top-5",
           "best_epoch": "best epoch", "epochs_run": "epochs", "seconds": "seconds",
           "train_images_per_second": "train img/s", "params_trainable": "trainable params"}
CONFIG_COLUMN = "config (keys that differ)"


def _column(value, column: str) -> str:
    if column in ("seconds", "train_images_per_second") and isinstance(value, (int, float)):
        return f"{value:.1f}"
    return fmt(value)


def _short(text: str) -> str:
    """A git commit (40 hex digits) cut to its first 12, as git shows it."""
    return re.sub(r"\b([0-9a-f]{12})[0-9a-f]{28}\b", r"\1", text)


def _classifier_section(done: list[dict], config_keys: list[str]) -> list[str]:
    differ = differing_fields([e["metrics"].get("protocol") for e in done])
    rows = []
    for e in done:
        model = e["config"].get("model", {}) if isinstance(e["config"].get("model"), dict) else {}
        data = e["config"].get("data", {}) if isinstance(e["config"].get("data"), dict) else {}
        protocol = flatten(e["metrics"].get("protocol"))
        rows.append([e["name"], fmt(model.get("name")), _method(e["metrics"].get("protocol")), fmt(data.get("name")),
                     fmt(data.get("image_size")), fmt(protocol.get("crop_ratio")),
                     *(_column(e["metrics"].get(c), c) for c in COLUMNS),
                     fmt(e["metrics"].get("device")), differing_values(e, config_keys)])
    header = ["run", "model", "method", "data", "px", "eval crop", *COLUMNS.values(), "device", CONFIG_COLUMN]
    lines = ["## Classifier runs", "", table(header, rows), ""]
    if differ:  # a table of their own: as columns of the one above they pushed it off the page
        rows = [[e["name"], *(_short(fmt(flatten(e["metrics"].get("protocol")).get(k))) for k in differ)] for e in done]
        lines += [table(["run", *(f"protocol.{k}" for k in differ)], rows), ""]
    notes = []
    settings = sorted({_method(e["metrics"].get("protocol"), True) for e in done} - {"plain", "-"})
    if settings:  # each method's settings once (metrics.json protocol.method; docs/methods.md)
        notes.append("Method settings: " + "; ".join(settings) + ".")
    if config_keys:
        notes.append(f"The {CONFIG_COLUMN} column lists the config.yaml keys whose values are not the same in "
                     f"every classifier run of this report ({len(config_keys)} key{'s' if len(config_keys) != 1 else ''}); "
                     "keys all runs share are left out.")
    elif len(done) > 1:
        notes.append("Every classifier run has the same config.yaml (no config column entries).")
    notes.append("eval crop is the crop ratio of the evaluation that scored the run (protocol.crop_ratio: the "
                 "centre crop's side over the resized shorter side, data.crop_ratio).")
    if differ:
        notes.append("The second table lists the protocol fields (metrics.json protocol block) that differ "
                     "between these runs.")
    return lines + ([" ".join(notes), ""] if notes else [])


def _method(protocol, settings: bool = False) -> str:
    """The FGVC method of a run (metrics.json protocol.method; 'plain' before methods were recorded), with its
    settings as key=value when ``settings``."""
    method = protocol.get("method") if isinstance(protocol, dict) else None
    if not isinstance(method, dict):
        return "plain" if isinstance(protocol, dict) else "-"
    name = fmt(method.get("name"))
    rest = [f"{k}={compact(v)}" for k, v in method.items() if k != "name"]
    return f"{name} ({', '.join(rest)})" if settings and rest else name


def _figures(classifiers: list[dict], out: Path) -> list[str]:
    lines = []
    # one run's curves are its own curves.png (in its section); the comparison starts at two
    with_history = [e for e in classifiers if e["history"]]
    curves = figures.compare_curves(with_history, out / "report_curves.png") if len(with_history) > 1 else None
    if curves:
        lines += picture(curves, out, "Validation loss (log scale) and accuracy per epoch of every classifier run")
    bars = figures.accuracy_bars([e for e in classifiers if not e["unfinished"]], out / "report_test_acc.png")
    if bars:
        lines += picture(bars, out, "Test accuracy of the best checkpoint per classifier run")
    return ["## Comparison figures", "", *lines] if lines else []


def _unfinished_section(entries: list[dict], config_keys: list[str]) -> list[str]:
    stopped = [e for e in entries if e["unfinished"]]
    if not stopped:
        return []
    rows = [[e["name"], e["kind"], e["unfinished"], differing_values(e, config_keys) if e["kind"] == "classifier" else ""]
            for e in stopped]
    return ["## Unfinished or failed runs", "",
            f"{len(stopped)} run director{'y has' if len(stopped) == 1 else 'ies have'} no finished result "
            "(interrupted, failed, or still running); what their files say:", "",
            table(["run", "kind", "status (failed or unfinished)", CONFIG_COLUMN], rows), ""]


def _clip_section(entries: list[dict]) -> list[str]:
    if not entries:
        return []
    differ = differing_fields([e["metrics"].get("protocol") for e in entries])
    rows = []
    for e in entries:
        m = e["metrics"]
        accs = {k: v for k, v in m.items() if k.endswith(("_acc", "_top5")) and isinstance(v, float)}
        protocol = flatten(m.get("protocol"))
        rows.append([e["name"], fmt(m.get("task")), fmt(m.get("model")),
                     ", ".join(f"{k} {v:.4f}" for k, v in accs.items()),
                     ", ".join(f"{k}={fmt(protocol.get(k))}" for k in differ)])
    return ["## CLIP, zero-shot and probe runs", "",
            table(["run", "task", "model", "accuracy", "protocol differences"], rows), ""]


def _gan_section(entries: list[dict], out: Path) -> list[str]:
    if not entries:
        return []
    keys = config_differences(entries)
    rows = []
    for e in entries:
        m, planned = e["metrics"], e["config"].get("iterations")
        rows.append([e["name"], "unfinished" if e["unfinished"] else "finished",
                     f"{fmt(m.get('iterations'))} of {fmt(planned)}", fmt(m.get("n_classes")), fmt(m.get("image_size")),
                     fmt(m.get("batch_size")), _num(m.get("final_d_loss")), _num(m.get("final_g_loss")),
                     fmt(m.get("seconds")), fmt(m.get("device")), differing_values(e, keys)])
    lines = ["## GAN runs", "",
             table(["run", "status", "iterations", "classes", "px", "batch", "final D loss", "final G loss",
                    "seconds", "device", CONFIG_COLUMN], rows), "",
             "Final losses are hinge losses averaged over the last iterations (metrics.json final_window).", ""]
    for e in entries:
        lines += gan_pictures(e, out)
    return lines


def _study_sections(root: Path, out: Path, entries: list[dict]) -> list[str]:
    lines = []
    for path in sorted(root.rglob("table.md")):
        head, _, body = path.read_text(encoding="utf-8").partition("\n")
        plot = path.with_name("table.png")
        body = body.replace("![accuracy per row](table.png)",
                            f"![accuracy per row]({link(plot, out)})" if plot.is_file() else "")
        lines += [f"## Study: {head.lstrip('# ').strip() or path.parent.name}", "", body.strip(), ""]
        rows = {e["dir"].name: e["metrics"] for e in entries if e["dir"].parent == path.parent and e["metrics"]}
        compared = paper_comparison(path.parent.name, rows)
        if compared:
            header, rows_, notes = compared
            lines += ["### Paper / ours / difference", "", table(header, rows_), "", " ".join(notes), ""]
    return lines


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def _eval_rows(entries: list[dict]) -> tuple[list[list[str]], list[str]]:
    """One row per eval_<split>.json that `fgvc eval` wrote of the run's current best checkpoint: accuracy,
    TTA beside it, calibration, open set; and a sentence per stale file (of an earlier checkpoint), left out."""
    rows, stale = [], []
    for e in entries:
        for found in evaluations(e):
            ev = found["result"]
            if found["stale"]:
                stale.append(f"{cell(e['name'])} eval_{found['split']}.json ({found['stale']}; run "
                             f"fgvc eval {cell(e['command_path'])} --split {found['split']} again)")
                continue
            tta = ev.get("tta") or {}
            cal = (ev.get("calibration") or {}).get("test") or {}
            before, after = cal.get("before") or {}, cal.get("after") or {}
            scores = (ev.get("openset") or {}).get("scores") or {}
            rows.append([
                e["name"] + (" (unfinished run)" if e["unfinished"] else ""), found["split"], fmt(ev.get("acc")),
                f"{fmt(tta.get('acc'))} ({tta.get('mode')})" if tta else "",
                f"{fmt(before.get('ece'))} -> {fmt(after.get('ece'))}" if cal else "",
                f"{_num(before.get('nll'))} -> {_num(after.get('nll'))}" if cal else "",  # nats: may pass 1
                f"{(ev.get('calibration') or {}).get('temperature', 0):.3f}" if cal else "",
                " / ".join(fmt((scores.get(k) or {}).get("auroc")) for k in ("msp", "energy", "max_logit"))
                if scores else "",
            ])
    return rows, stale


def _eval_section(entries: list[dict]) -> list[str]:
    rows, stale = _eval_rows(entries)
    if not rows and not stale:
        return []
    lines = ["## Evaluations (fgvc eval)", ""]
    if rows:
        lines += [table(["run", "split", "acc", "TTA acc (mode)", "test ECE before -> after",
                         "test NLL before -> after", "T (fitted on val)", "unknown AUROC msp / energy / max logit"],
                        rows), "",
                  "The plain accuracy is the single centre crop; TTA accuracy is reported beside it with its mode.", ""]
    if stale:
        lines += ["Left out, stale (an evaluation of another checkpoint than the run's best now): "
                  + "; ".join(stale) + ".", ""]
    return lines


def build_markdown(root: Path, out: Path) -> str:
    """The report's Markdown for the runs below ``root``, its picture links relative to ``out`` (where the
    report's own figures are written). Raises UserError when there is no run below root."""
    entries = collect_runs(root)
    if not entries:
        raise UserError(f"no run directories (folders with metrics.json or config.yaml) under {root}; "
                        "train something first")
    classifiers = [e for e in entries if e["kind"] == "classifier"]
    done = [e for e in classifiers if not e["unfinished"]]
    clip = [e for e in entries if e["kind"] in ("clip", "other") and not e["unfinished"]]
    gans = [e for e in entries if e["kind"] == "gan"]
    studies = sorted({p.parent for p in root.rglob("table.md")})
    config_keys = config_differences(classifiers)
    counts = [f"{len(done)} finished classifier run(s)", f"{len(clip)} CLIP / zero-shot / probe run(s)",
              f"{len(gans)} GAN run(s)", f"{len([e for e in entries if e['unfinished']])} unfinished or failed",
              f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}"]
    lines = [f"# fgvc report: {cell(root.resolve().name)}", "",
             f"{len(entries)} run director{'y' if len(entries) == 1 else 'ies'} below {cell(root.resolve().name)}: "
             + ", ".join(counts) + ". Every number comes from the files the runs wrote (nothing was re-run).", ""]
    if done:
        lines += _classifier_section(done, config_keys)
    lines += _figures(classifiers, out)
    lines += _unfinished_section(entries, config_keys)
    lines += _study_sections(root, out, entries)
    lines += _clip_section(clip)
    lines += _gan_section(gans, out)
    lines += _eval_section(entries)
    for e in classifiers:
        lines += run_pictures(e, out)
    return "\n".join(lines) + "\n"


def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write report.md and report.html into ``out`` (default: root); returns the Markdown path.

    report.md links the runs' pictures relative to ``out``; report.html embeds them as data URIs
    (pictures over 200 KB downscaled for it), so it can be mailed or moved on its own."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass the folder holding your run directories (e.g. runs)")
    out = runs.check_out_dir(out, "--out") if out else root
    out.mkdir(parents=True, exist_ok=True)
    text = build_markdown(root, out)
    html, _, _ = page.render(text, f"fgvc report: {root.resolve().name}", out)
    runs.write_text_atomic(out / "report.md", text)
    runs.write_text_atomic(out / "report.html", html)
    return out / "report.md"
