"""Per-class accuracy and confusions: where a fine-grained classifier goes wrong.

Shared by `fgvc eval` (trained runs) and CLIP zero-shot. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch

from fgvc import runs


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
    """Row-normalised confusion matrix (share of each true class's images per predicted class);
    with many classes the tick labels are dropped and the diagonal tells the story."""
    from matplotlib.figure import Figure

    rates = conf.float() / conf.sum(1, keepdim=True).clamp(min=1)
    n = len(class_names)
    side = min(12.0, 3.0 + 0.25 * n)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(rates.numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    if n <= 40:
        labels = [name[:28] for name in class_names]
        ax.set_xticks(range(n), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(n), labels, fontsize=6)
    return runs.save_figure(fig, path, dpi=110)
