"""Per-class accuracy and confusions: where a fine-grained classifier goes wrong.

Shared by `fgvc eval` (trained runs) and CLIP zero-shot. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch

from fgvc import runs
from fgvc.data.base import readable_name


def confusion_matrix(labels: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts, rows = true class, columns = predicted class."""
    labels, pred = torch.as_tensor(labels).long().cpu(), torch.as_tensor(pred).long().cpu()
    if labels.numel() and int(max(labels.max(), pred.max())) >= num_classes:
        raise ValueError(f"a label or prediction is out of range for {num_classes} classes")
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    conf.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    return conf


def class_report(conf: torch.Tensor, class_names: list[str], top_pairs: int = 20) -> dict:
    """Mean per-class accuracy, accuracy and image count per class, and the (true, predicted)
    pairs with errors, most frequent first; ``rate`` is the share of the true class's images
    given that wrong label. A class without images has accuracy None."""
    support, correct = conf.sum(1), conf.diag()
    seen = support > 0
    off = conf.clone().fill_diagonal_(0)
    pairs = sorted(((int(off[t, p]), t, p) for t, p in off.nonzero().tolist()), key=lambda e: (-e[0], e[1], e[2]))
    confusions = [{"true": class_names[t], "predicted": class_names[p], "count": n, "rate": n / int(support[t])}
                  for n, t, p in pairs]
    return {
        "mean_class_acc": float((correct[seen].float() / support[seen]).mean()) if seen.any() else 0.0,
        "per_class_acc": {name: (float(correct[c] / support[c]) if support[c] else None)
                          for c, name in enumerate(class_names)},
        "per_class_n": {name: int(support[c]) for c, name in enumerate(class_names)},
        "top_confusions": confusions[:top_pairs],
        "confusions": confusions,
    }


def plot_confusion(conf: torch.Tensor, class_names: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (share of each true class's images per predicted class), drawn
    by ``confusion_figure``."""
    return runs.save_figure(confusion_figure(conf, class_names, title), path, dpi=110)


def _class_ids(class_names: list[str]) -> list[int]:
    """1-based class ids: the folder prefixes when every name has one (CUB's '001.Black_footed_Albatross'),
    else position + 1."""
    import re

    prefixes = [re.match(r"^(\d+)[._-]", name) for name in class_names]
    if class_names and all(prefixes):
        return [int(m.group(1)) for m in prefixes]
    return list(range(1, len(class_names) + 1))


def confusion_figure(conf: torch.Tensor, class_names: list[str], title: str = ""):
    """The confusion matrix as a matplotlib Figure. Up to 40 classes are labelled "id name", whole names
    (wrapped at word boundaries up to 12 classes, on one line beyond); with more, the ticks are 1-based
    class ids that match the folder prefixes, and the diagonal tells the story."""
    import textwrap

    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rates = conf.float() / conf.sum(1, keepdim=True).clamp(min=1)
    n = len(class_names)
    ids = _class_ids(class_names)
    side = min(12.0, 3.5 + 0.25 * n)
    fig = Figure(figsize=(side + 1.6, side + 0.4))
    ax = fig.add_subplot()
    image = ax.imshow(rates.numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's images")
    accuracy = float(conf.diag().sum() / conf.sum().clamp(min=1))
    heading = f"confusion matrix, {n} classes, accuracy {accuracy:.3f}"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=10)
    if n <= 40:
        # whole names, never cut (two species may differ in their last word): wrapped for few classes,
        # one line each for more (the figure's layout makes room for the longest)
        width = 26 if n <= 12 else 200
        labels = [textwrap.fill(f"{i} {readable_name(name)}", width, break_long_words=False)
                  for i, name in zip(ids, class_names)]
        ax.set_xticks(range(n), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(n), labels, fontsize=6)
        ax.set(xlabel="predicted class", ylabel="true class")
    else:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
            axis.set_major_formatter(FuncFormatter(lambda x, _pos: str(ids[int(x)]) if 0 <= int(x) < n else ""))
        ax.set(xlabel="predicted class (id = folder prefix)", ylabel="true class (id = folder prefix)")
    fig.tight_layout()
    return fig
