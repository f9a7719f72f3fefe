"""What a finished training run shows: curves.png, the headline metrics table of `fgvc train`."""

from __future__ import annotations

from pathlib import Path

from fgvc import runs


def log_axis(ax, values) -> None:
    """Put ``ax``'s y axis on a log scale labelled at 2 to 7 round values inside the data's range, written as
    plain numbers (``0.1  1  10``; within one decade ``1.2  1.3  1.4``): matplotlib's own labels give every
    minor tick a ``1.3x10^0`` label when the range is under a decade, and none inside it otherwise."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    values = [v for v in values if math.isfinite(v) and v > 0]
    ax.set_yscale("log")
    if not values:
        return
    lo, hi = min(values), max(values)
    ticks: list[float] = []
    for subs in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), [1 + k / 10 for k in range(90)], [1 + k / 100 for k in range(900)]):
        ticks = sorted({round(m * 10.0 ** k, 12) for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                        for m in subs if lo <= m * 10.0 ** k <= hi})
        if len(ticks) >= 3:
            break
    if len(ticks) > 7:
        ticks = ticks[::math.ceil(len(ticks) / 6)]
    if len(ticks) < 2:  # a flat curve: its two ends
        ticks = sorted({lo, hi})
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_curves(history: list[dict], path: Path) -> None:
    """curves.png of a run directory: loss and accuracy per epoch, train vs val (see ``curves_figure``)."""
    runs.save_figure(curves_figure(history, Path(path).parent.resolve().name), path, tight=False)


def curves_figure(history: list[dict], run_name: str):
    """Loss (log axis, so an epoch-1 loss of 94 does not flatten the rest) and accuracy per epoch, train
    vs val, on integer epoch ticks with a marker per epoch (a 1-epoch run is a dot, not nothing); the
    best validation epoch (the checkpoint kept) and each learning-rate drop are marked."""
    import math

    from matplotlib.figure import Figure  # not pyplot: a library must not switch the user's backend
    from matplotlib.ticker import MaxNLocator

    def column(key):
        return [float(h[key]) if h.get(key) not in (None, "") else math.nan for h in history]

    epochs = [int(h["epoch"]) for h in history]
    losses = {"train": column("train_loss"), "val": column("val_loss")}
    accs = {"train": column("train_acc"), "val": column("val_acc")}
    marker = {"marker": "o", "markersize": 3 if len(epochs) > 30 else 5}
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for label, values in losses.items():
        ax1.plot(epochs, values, label=label, **marker)
    for label, values in accs.items():
        ax2.plot(epochs, values, label=label, **marker)
    finite = [v for values in losses.values() for v in values if math.isfinite(v)]
    log = bool(finite) and min(finite) > 0
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss" + (" (log scale)" if log else ""), title="loss")
    if log:
        log_axis(ax1, finite)
    ax2.set(xlabel="epoch", ylabel="accuracy", title="top-1 accuracy", ylim=(0, 1.02))

    val = [(v, e) for v, e in zip(accs["val"], epochs) if math.isfinite(v)]
    best = None
    if val:  # the loop keeps the first epoch of the highest val accuracy
        best_acc = max(v for v, _ in val)
        best = next(e for v, e in val if v == best_acc)
        for ax in (ax1, ax2):
            ax.axvline(best, color="tab:green", linestyle="--", linewidth=1,
                       label=f"best val (epoch {best})" if ax is ax2 else None)
        ax2.plot([best], [best_acc], marker="*", markersize=13, color="tab:green", linestyle="none")
    lrs = column("lr")
    drops = [(e, old, new) for e, old, new in zip(epochs[1:], lrs, lrs[1:])
             if math.isfinite(old) and math.isfinite(new) and new < old]
    for i, (e, _old, new) in enumerate(drops):
        for ax in (ax1, ax2):
            ax.axvline(e - 0.5, color="0.4", linestyle=":", linewidth=1,
                       label="lr drop" if ax is ax2 and i == 0 else None)
        ax2.annotate(f"lr {new:.2g}", (e - 0.5, 0.02), rotation=90, fontsize=7, color="0.3",
                     ha="right", va="bottom")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n = len(epochs)
    summary = f"best val accuracy {max(v for v, _ in val):.3f} at epoch {best}" if val else "no validation"
    fig.suptitle(f"{run_name}: training curves, {n} epoch{'s' if n != 1 else ''} ({summary})", fontsize=10)
    fig.tight_layout()
    return fig


def metrics_table(metrics: dict) -> str:
    """A short human-readable table of the headline metrics: train and val accuracy are those of the
    best epoch (the checkpoint that is tested), which the labels say, not of the last one."""
    at = f" (epoch {metrics['best_epoch']})" if metrics.get("best_epoch") is not None else ""
    rows = [(f"train acc{at}", "train_acc"), (f"val acc{at}", "val_acc"), ("test acc", "test_acc"),
            ("test top-5", "test_top5"), ("best epoch", "best_epoch"), ("epochs run", "epochs_run"),
            ("seconds", "seconds"), ("train img/s", "train_images_per_second"),
            ("params (trainable)", "params_trainable")]
    lines = []
    for label, key in rows:
        v = metrics.get(key)
        text = f"{v:.4f}" if isinstance(v, float) and key.endswith(("acc", "top5")) else str(v)
        lines.append(f"  {label:<22} {text}")
    return "\n".join(lines)
