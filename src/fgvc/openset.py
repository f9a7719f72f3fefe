"""Unknown-species rejection (open set) for `fgvc eval RUN --unknown DIR|heldout`.

A closed-set classifier always names one of its classes; a user photographing a species it
never saw needs a score that says "none of these". Each score is higher for images the
model believes it knows:

- ``msp``: maximum softmax probability (Hendrycks & Gimpel 2017, "A Baseline for Detecting
  Misclassified and Out-of-Distribution Examples in Neural Networks");
- ``energy``: the negative free energy logsumexp_c(logit_c) at temperature 1 (Liu et al.
  2020, "Energy-based Out-of-distribution Detection");
- ``max_logit``: the largest logit (Hendrycks et al. 2022, "Scaling Out-of-Distribution
  Detection for Real-World Settings").

Known images (the split's test images of the model's classes) are the positives, unknown
images the negatives. AUROC is torchmetrics' ``binary_auroc`` (on the scores' ranks, ties
kept, so that large logits are not squashed into ties); FPR at 95% TPR is the share of
unknown images accepted at the threshold that accepts 95% of the known ones. The
accuracy/coverage curve keeps the known images of highest score first: accuracy among the
kept ones vs the share kept.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from fgvc import runs
from fgvc.data import build_dataset
from fgvc.data.base import IMAGE_EXTENSIONS, Sample
from fgvc.data.folder import image_files
from fgvc.data.subset import heldout_classes, select_classes
from fgvc.errors import UserError

SCORES = ("msp", "energy", "max_logit")


def ood_scores(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"msp", "energy", "max_logit"}``, each (N,) float64, from ``logits`` (N, C); higher = more known."""
    logits = torch.as_tensor(logits).double()
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got {tuple(logits.shape)}")
    return {"msp": logits.softmax(1).max(1).values, "energy": logits.logsumexp(1), "max_logit": logits.max(1).values}


def auroc(known: torch.Tensor, unknown: torch.Tensor) -> float:
    """Area under the ROC curve of telling ``known`` scores (N,) from ``unknown`` scores (M,) (higher =
    known), in [0, 1]: the chance that a random known image scores above a random unknown one, ties
    counting one half (0.5 for a constant score). torchmetrics' ``binary_auroc`` on the scores' dense
    ranks scaled into [0, 1]. Raises UserError when either set is empty."""
    known, unknown = torch.as_tensor(known).double().flatten(), torch.as_tensor(unknown).double().flatten()
    if not known.numel() or not unknown.numel():
        raise UserError("AUROC needs at least one known and one unknown image")
    from torchmetrics.functional.classification import binary_auroc

    values, ranks = torch.unique(torch.cat([known, unknown]), return_inverse=True)
    preds = ranks.double() / max(1, values.numel() - 1)  # in [0, 1]: torchmetrics applies no sigmoid
    target = torch.cat([torch.ones(known.numel()), torch.zeros(unknown.numel())]).long()
    return float(binary_auroc(preds, target))


def fpr_at_tpr(known: torch.Tensor, unknown: torch.Tensor, tpr: float = 0.95) -> float:
    """Share of ``unknown`` scores at or above the highest threshold that keeps at least ``tpr`` of the
    ``known`` scores (N,) (accepted = score >= threshold); lower is better."""
    known, unknown = torch.as_tensor(known).double().flatten(), torch.as_tensor(unknown).double().flatten()
    if not known.numel() or not unknown.numel():
        raise UserError("FPR at 95% TPR needs at least one known and one unknown image")
    ordered = known.sort(descending=True).values
    threshold = ordered[max(0, math.ceil(tpr * known.numel()) - 1)]
    return float((unknown >= threshold).double().mean())


def coverage_curve(scores: torch.Tensor, correct: torch.Tensor) -> tuple[list[float], list[float]]:
    """(coverage, accuracy): keeping the k images of highest score, k = 1..N, the share kept and the accuracy
    among them (selective classification); ``correct`` (N,) is 1 where the prediction is right."""
    order = torch.as_tensor(scores).double().argsort(descending=True, stable=True)
    hits = torch.as_tensor(correct).double()[order].cumsum(0)
    k = torch.arange(1, order.numel() + 1, dtype=torch.float64)
    return (k / order.numel()).tolist(), (hits / k).tolist()


def openset_report(known_logits: torch.Tensor, known_labels: torch.Tensor, unknown_logits: torch.Tensor) -> dict:
    """Per score: AUROC, FPR at 95% TPR, mean score of known and unknown images, and the accuracy of the
    known images at coverages 1.0 / 0.9 / 0.8 / 0.5. ``known_logits`` (N, C) with labels (N,) are images of
    the model's classes, ``unknown_logits`` (M, C) of classes it never saw."""
    known_logits, unknown_logits = torch.as_tensor(known_logits).double(), torch.as_tensor(unknown_logits).double()
    correct = known_logits.argmax(1) == torch.as_tensor(known_labels).long()
    known_scores, unknown_scores = ood_scores(known_logits), ood_scores(unknown_logits)
    report = {"known_images": int(known_logits.shape[0]), "unknown_images": int(unknown_logits.shape[0]),
              "known_positive": True, "scores": {}}
    for name in SCORES:
        k, u = known_scores[name], unknown_scores[name]
        coverage, accuracy = coverage_curve(k, correct)
        at = {f"{c:.1f}": accuracy[max(0, math.ceil(c * len(coverage)) - 1)] for c in (1.0, 0.9, 0.8, 0.5)}
        report["scores"][name] = {"auroc": auroc(k, u), "fpr_at_95_tpr": fpr_at_tpr(k, u),
                                  "known_mean": float(k.mean()), "unknown_mean": float(u.mean()),
                                  "accuracy_at_coverage": at}
    return report


def plot_coverage(known_logits: torch.Tensor, known_labels: torch.Tensor, path: Path, aurocs: dict | None = None,
                  title: str = "") -> Path:
    """Accuracy/coverage curve of each score on the known images (``known_logits`` (N, C), labels (N,)),
    AUROC against the unknown images in the legend when given; a PNG written atomically at ``path``."""
    from matplotlib.figure import Figure

    known_logits = torch.as_tensor(known_logits).double()
    correct = known_logits.argmax(1) == torch.as_tensor(known_labels).long()
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot()
    for name, score in ood_scores(known_logits).items():
        coverage, accuracy = coverage_curve(score, correct)
        label = f"{name} (AUROC {aurocs[name]:.3f})" if aurocs and name in aurocs else name
        ax.plot(coverage, accuracy, label=label)
    ax.axhline(float(correct.double().mean()), color="gray", ls="--", lw=1, label="accuracy on all")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="coverage (share of known test images kept, highest score first)",
           ylabel="accuracy of the kept images", title=title or "accuracy / coverage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return runs.save_figure(fig, path, dpi=110)


HELDOUT = "heldout"  # --unknown heldout: the test images of the classes the run's data.classes left out


def heldout_dataset(cfg, transform, split: str = "test"):
    """The ``split`` of ``cfg``'s dataset (the split the known images come from, so the two never mix)
    restricted to the classes ``cfg.data.classes`` left out (fgvc.data.subset.heldout_classes), through
    ``transform``: the unknown images of a run trained on a subset of its dataset's classes. UserError
    when the run trained on every class."""
    d = cfg.data
    every = build_dataset(d.name, d.root, split, transform, d.val_fraction, cfg.train.seed)
    return select_classes(every, heldout_classes(d.classes, len(every.class_names)))


def unknown_samples(folder: str | Path) -> list:
    """``Sample``s (label 0, unused) of every image file below ``folder``, recursively; a missing folder or one
    without images is a UserError."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"--unknown {folder} is not a folder; pass a folder of images of classes the model never "
                        "saw")
    files = image_files(folder)
    if not files:
        raise UserError(f"--unknown {folder} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)}); pass a "
                        "folder of images of classes the model never saw")
    return [Sample(p, 0) for p in files]


__all__ = ["HELDOUT", "SCORES", "auroc", "coverage_curve", "fpr_at_tpr", "ood_scores", "openset_report", "plot_coverage",
           "heldout_dataset", "unknown_samples"]
