"""Figures for attacks: accuracy against eps (seed Fig. 9/11) and a gallery of adversarial examples (Fig. 10)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from torch import Tensor

from fgvc.robust.sweep import format_eps
from fgvc.runs import save_figure


def plot_accuracy_vs_eps(results: Mapping[str, Mapping[float, float]], path: str | Path,
                         title: str = "Accuracy under FGSM attack", xlabel: str = "eps (pixel units of [0, 1])") -> Path:
    """One curve per label of accuracy (fraction in [0, 1]) against eps, e.g. standard vs adversarially trained."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for label, curve in results.items():
        eps_values = sorted(curve)
        ax.plot(eps_values, [curve[e] for e in eps_values], marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel="accuracy", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if results:
        ax.legend()
    return save_figure(fig, path, dpi=120)


def _hwc(image: Tensor):
    image = image.detach().float().cpu().clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _name(index: int, class_names: Sequence[str] | None, width: int = 22) -> str:
    name = class_names[index] if class_names and 0 <= index < len(class_names) else str(index)
    return name if len(name) <= width else name[: width - 1] + "…"


def save_gallery(examples: Mapping[float, Sequence[Mapping]], class_names: Sequence[str] | None,
                 path: str | Path, rows: int = 5) -> Path:
    """Grid of adversarial images: a column per eps > 0, a row per example, each titled "true" over "-> pred".

    ``examples`` is ``evaluate_attack(...)["examples"]``; an eps without a
    successful example keeps its column, marked "none".
    """
    columns = sorted(eps for eps in examples if eps > 0)
    n_rows = max([1] + [min(rows, len(examples[eps])) for eps in columns])
    fig = Figure(figsize=(1.8 * max(1, len(columns)), 1.9 * n_rows))
    axes = fig.subplots(n_rows, max(1, len(columns)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for j, eps in enumerate(columns):
        shown = list(examples[eps])[:rows]
        if not shown:
            axes[0, j].text(0.5, 0.5, "none", ha="center", va="center", transform=axes[0, j].transAxes)
            axes[0, j].set_title(f"eps = {format_eps(eps)}", fontsize=7)
        for i, example in enumerate(shown):
            ax = axes[i, j]
            ax.imshow(_hwc(example["adversarial"]), cmap="gray" if example["adversarial"].shape[0] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            # two lines: "true -> pred" on one line overlaps the next column's title
            label = f"{_name(example['true'], class_names)}\n-> {_name(example['pred'], class_names)}"
            ax.set_title(f"eps = {format_eps(eps)}\n{label}" if i == 0 else label, fontsize=7)
    if not columns:
        axes[0, 0].text(0.5, 0.5, "no eps > 0", ha="center", va="center", transform=axes[0, 0].transAxes)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
