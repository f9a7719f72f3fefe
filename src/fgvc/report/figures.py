"""The report's own figures, comparing runs (each run's own pictures are embedded as they are).

``compare_curves``: validation loss (log axis) and accuracy per epoch of every classifier run,
a marker per epoch so that a 1-epoch run is a visible dot, integer epoch ticks, unfinished runs
dashed. ``accuracy_bars``: test accuracy of the best checkpoint per run, drawn only for two
runs or more (one run is a table row, not a chart).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from fgvc import runs

MAX_LEGEND = 20  # runs named in a legend; more are drawn but summarised in the title


def _label(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def compare_curves(entries: list[dict], path: Path) -> Path | None:
    """Validation loss and accuracy per epoch of ``entries`` (collect_runs dicts with a history) in one
    PNG; None when no entry has a history."""
    fig = curves_figure(entries)
    return runs.save_figure(fig, path, dpi=100, tight=False) if fig is not None else None


def curves_figure(entries: list[dict]):
    """The matplotlib Figure of ``compare_curves`` (None when no entry has a history)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    drawn = [e for e in entries if e["history"]]
    if not drawn:
        return None
    fig = Figure(figsize=(11, 4.6 + 0.18 * min(len(drawn), MAX_LEGEND)))
    ax_loss, ax_acc = fig.subplots(1, 2)
    colours = matplotlib.colormaps["tab10" if len(drawn) <= 10 else "tab20"]
    positive = True
    for i, e in enumerate(drawn):
        epochs = [h["epoch"] for h in e["history"]]
        style = {"marker": "o", "markersize": 4 if len(epochs) > 20 else 6, "linewidth": 1.4,
                 "linestyle": "--" if e["unfinished"] else "-",
                 "label": _label(e["name"]) + (" (unfinished)" if e["unfinished"] else "") if i < MAX_LEGEND else None}
        style["color"] = colours(i % colours.N)
        loss = [h.get("val_loss", math.nan) for h in e["history"]]
        positive &= all(v > 0 for v in loss if math.isfinite(v))
        ax_loss.plot(epochs, loss, **style)
        ax_acc.plot(epochs, [h.get("val_acc", math.nan) for h in e["history"]], **style)
    if positive:  # an epoch-1 loss of 100 would flatten every later epoch on a linear axis
        from fgvc.train.summary import log_axis

        log_axis(ax_loss, [h.get("val_loss", math.nan) for e in drawn for h in e["history"]])
    ax_loss.set(xlabel="epoch", ylabel="validation cross-entropy" + (" (log scale)" if positive else ""),
                title="validation loss")
    ax_acc.set(xlabel="epoch", ylabel="validation top-1 accuracy", ylim=(0, 1.02), title="validation accuracy")
    longest = max(h["epoch"] for e in drawn for h in e["history"])
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if longest <= 1:
            ax.set_xlim(0, 2)
        ax.grid(alpha=0.3)
    more = f"; {len(drawn) - MAX_LEGEND} more not in the legend" if len(drawn) > MAX_LEGEND else ""
    fig.suptitle(f"Validation loss and accuracy per epoch, {len(drawn)} classifier run(s) "
                 f"(dashed: unfinished{more})", fontsize=11)
    handles, labels = ax_acc.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2 if len(labels) > 4 else 1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(min(len(labels), MAX_LEGEND) / 2), 1, 0.95))
    return fig


def accuracy_bars(entries: list[dict], path: Path) -> Path | None:
    """Horizontal bars of test accuracy (best checkpoint), one per entry with a numeric test_acc; None for
    fewer than two such entries."""
    from matplotlib.figure import Figure

    scored = [e for e in entries if isinstance(e["metrics"].get("test_acc"), (int, float))]
    if len(scored) < 2:
        return None
    fig = Figure(figsize=(8, 0.38 * len(scored) + 1.3))
    ax = fig.add_subplot()
    bars = ax.barh([_label(e["name"]) for e in scored], [e["metrics"]["test_acc"] for e in scored], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set(xlabel="test top-1 accuracy (best checkpoint)", xlim=(0, 1.1))
    ax.set_title(textwrap.fill(f"Test accuracy per classifier run ({len(scored)} runs)", 80), fontsize=11)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    return runs.save_figure(fig, path, dpi=100)
