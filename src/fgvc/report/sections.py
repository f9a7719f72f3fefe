"""Markdown pieces of the report: tables, picture links and the per-run sections (the pictures
`fgvc train`, `eval`, `explain` and `attack` wrote, the attack sweeps' facts, GAN sample grids).

Picture links are relative to the folder the report is written to (``out``), so report.md works
where it lies and report.html can embed the same files.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from urllib.parse import quote

from fgvc.report.collect import evaluations, read_json


def cell(value) -> str:
    """Text for a Markdown table cell: pipes and asterisks escaped, ``<`` as an entity (never a tag)."""
    text = "" if value is None else str(value)
    return (text.replace("<", "&lt;").replace("|", "\\|")
            .replace("*", "\\*").replace("\n", " "))


def fmt(value) -> str:
    """Accuracies and other fractions with 4 decimals, larger numbers with 1; None as ''."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isnan(value):  # a score undefined for every image (flat maps)
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1.0 else f"{value:.1f}"
    return "" if value is None else str(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def link(path: Path, out: Path) -> str:
    """``path`` relative to ``out`` as a URL path (spaces and other characters %-escaped)."""
    return quote(Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix())


def picture(path: Path, out: Path, caption: str) -> list[str]:
    """Markdown lines showing a picture with its caption (nothing when the file is missing)."""
    if not Path(path).is_file():
        return []
    alt = caption.replace("[", "(").replace("]", ")")
    return [f"*{cell(caption)}*", "", f"![{alt}]({link(path, out)})", ""]


def _localization(run_dir: Path) -> list[str]:
    scores = read_json(run_dir / "explain" / "localization.json")
    methods = scores.get("methods", scores) if isinstance(scores, dict) else {}
    rows = [[m, *(fmt(v.get(k)) for k in ("energy_in_box", "box_area_share", "pointing_game", "n"))]
            for m, v in methods.items() if isinstance(v, dict)]
    if not rows:
        return []
    split = scores.get("split", "")
    return [f"Localisation of the maps against the ground-truth boxes ({split} split; pointing game: share of "
            "images whose map peak lies in the box, chance is the box area share):", "",
            table(["method", "energy in box", "box area share", "pointing game", "images"], rows), ""]


def attack_sections(run_dir: Path, out: Path) -> list[str]:
    """One ``###`` section per sweep ``fgvc attack`` wrote (attack/<name>.json): the attack, split, image
    count and eps values, accuracy per eps for each run on its curve (and the difference of two runs),
    the accuracy-vs-eps plot and the gallery."""
    lines = []
    for path in sorted((run_dir / "attack").glob("*.json")):
        record = read_json(path)
        if not isinstance(record, dict) or not isinstance(record.get("accuracy"), dict):
            continue
        attack = str(record.get("attack", path.stem))
        eps = list((record.get("eps") or {}).keys())
        steps = {s.get("steps") for s in (record.get("settings") or {}).values() if isinstance(s, dict)}
        curves = record["accuracy"]
        labels = list(curves)
        header = ["eps", *(f"accuracy: {label}" for label in labels)]
        if len(labels) == 2:
            header.append(f"{labels[1]} - {labels[0]}")
        rows = []
        for e in eps:
            values = [curves[label].get(e) for label in labels]
            row = [e, *(f"{v:.4f}" if isinstance(v, (int, float)) else "" for v in values)]
            if len(labels) == 2:
                row.append(f"{values[1] - values[0]:+.4f}" if all(isinstance(v, (int, float)) for v in values) else "")
            rows.append(row)
        step_text = f", {steps.pop()} step(s)" if len(steps) == 1 and None not in steps else ""
        lines += [f"### Attack {attack.upper()} on {run_dir.name} ({path.stem})", "",
                  f"Attack: **{attack}**{step_text}; split: {record.get('split', 'test')}; "
                  f"images: **{record.get('total', '?')}**; eps ({len(eps)} values, on [0, 1] pixels): "
                  f"**{', '.join(eps)}**.", "", table(header, rows), ""]
        lines += picture(path.with_suffix(".png"), out, f"Accuracy against eps under {attack.upper()}")
        lines += picture(path.with_name(f"{path.stem}_gallery.png"), out,
                         f"{attack.upper()} gallery: the same test images at every eps, clean image and perturbation beside the attacked one")
    return lines


def run_pictures(entry: dict, out: Path) -> list[str]:
    """The ``##`` section of one classifier run: every picture the analyses wrote into its directory, the
    localisation table and the attack sweeps; [] when the run has none of them."""
    d = entry["dir"]
    lines = picture(d / "curves.png", out, "Training curves: loss and accuracy per epoch, best epoch and lr drops marked")
    # an evaluation of an earlier best checkpoint is left out, its pictures with it
    stale = {e["split"] for e in evaluations(entry) if e["stale"]}
    for path in sorted(d.glob("confusion_*.png")):
        if path.stem.removeprefix("confusion_") not in stale:
            lines += picture(path, out, f"Confusion matrix on the {path.stem.removeprefix('confusion_')} split (fgvc eval)")
    if not stale:  # written by every evaluation, whichever split: shown only when none is stale
        lines += picture(d / "reliability.png", out, "Reliability diagram: confidence against accuracy (fgvc eval)")
    for path in sorted(d.glob("openset_*.png")):
        if path.stem.removeprefix("openset_") in stale:
            continue
        lines += picture(path, out, f"Unknown-species rejection on the {path.stem.removeprefix('openset_')} split "
                                    "(fgvc eval --unknown)")
    explain = picture(d / "explain" / "grid.png", out,
                      "Class activation maps (fgvc explain): a row per image, the explained class named, box drawn")
    explain += _localization(d)
    if explain:
        lines += ["### Where the model looks (fgvc explain)", "", *explain]
    lines += attack_sections(d, out)
    return [f"## Run {entry['name']}", "", *lines] if lines else []


def latest_sample_grid(run_dir: Path) -> Path | None:
    """The GAN run's newest samples/iter_XXXXXX.png (highest iteration), or None."""
    grids = sorted((run_dir / "samples").glob("iter_*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    return grids[-1] if grids else None


def gan_pictures(entry: dict, out: Path) -> list[str]:
    """The ``###`` section of one GAN run: its newest sample grid and the loss curves."""
    grid = latest_sample_grid(entry["dir"])
    lines = picture(grid, out, f"Generated samples at iteration {int(re.sub(r'[^0-9]', '', grid.stem))} "
                               "(a row per class, the same noise in each column)") if grid else []
    lines += picture(entry["dir"] / "losses.png", out, "Discriminator and generator hinge losses per iteration")
    return [f"### GAN run {entry['name']}", "", *lines] if lines else []
