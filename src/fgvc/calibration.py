"""Calibration of a classifier's probabilities: ECE, NLL, Brier score, temperature scaling, reliability diagram.

A classifier is calibrated when, among the images it gives confidence p (its top softmax
probability), a share p is classified correctly. Used by `fgvc eval`: scored on val and
test, a temperature fitted on val only and applied to test, reported before and after.

- Expected calibration error (ECE, Naeini et al. 2015; Guo et al. 2017): top-label
  confidences grouped in bins, sum over bins of (bin share of images) x |bin accuracy -
  bin mean confidence|. Equal-width bins ([0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1], the last one
  closed so that a confidence of exactly 1.0 is in it, as in Guo et al.; B = 15) or equal-mass
  bins (B groups of as near equal size as possible, by sorted confidence; Nixon et al. 2019,
  "adaptive ECE"). Every ECE number and the reliability diagram's bars come from ``bin_stats``:
  torchmetrics' ``multiclass_calibration_error`` agrees below 1.0 but counts confidences of
  exactly 1.0 (a saturated softmax) in an extra bin of their own.
- Negative log-likelihood: mean of -log p(true class), in nats.
- Brier score (Brier 1950), multi-class form: mean over images of sum over classes of
  (p_c - 1[c = true])^2, in [0, 2].
- Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): logits
  divided by one T > 0 fitted to minimise val NLL (LBFGS on log T); the argmax, and so the
  accuracy, is unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from fgvc import runs
from fgvc.errors import UserError

BINNINGS = ("width", "mass")


def _check(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = torch.as_tensor(logits).double().cpu(), torch.as_tensor(labels).long().cpu()
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise UserError("calibration needs at least one image; the split is empty")
    return logits, labels


def bin_stats(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15, binning: str = "width") -> list[dict]:
    """Per-bin ``{"lo", "hi", "n", "confidence", "accuracy"}`` of top-label confidences (N,) in [0, 1] and
    correctness (N,) in {0, 1}; empty bins are left out. ``binning`` "width": bins [k/B, (k+1)/B), the
    last one closed; "mass": the sorted confidences cut into B groups of near equal size (ties may fall
    in neighbouring groups). ``lo``/``hi`` are the bin's edges ("width") or its smallest / largest confidence."""
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, not {binning!r}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, not {n_bins}")
    confidence, correct = confidence.double().flatten(), correct.double().flatten()
    if binning == "width":
        index = (confidence * n_bins).floor().long().clamp(0, n_bins - 1)
        groups = [(index == b).nonzero().flatten() for b in range(n_bins)]
        edges = [(b / n_bins, (b + 1) / n_bins) for b in range(n_bins)]
    else:
        order = confidence.argsort(stable=True)
        groups = list(torch.tensor_split(order, min(n_bins, max(1, order.numel()))))
        edges = [(float(confidence[g].min()), float(confidence[g].max())) if g.numel() else (0.0, 0.0) for g in groups]
    return [{"lo": lo, "hi": hi, "n": int(g.numel()), "confidence": float(confidence[g].mean()),
             "accuracy": float(correct[g].mean())} for g, (lo, hi) in zip(groups, edges) if g.numel()]


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
                               binning: str = "width") -> float:
    """Top-label ECE in [0, 1] of probabilities ``probs`` (N, C) (rows sum to 1) for ``labels`` (N,), in the
    bins of ``bin_stats`` ("width": equal width, the last bin closed; "mass": equal mass), the bins the
    reliability diagram draws. Raises ValueError on bad shapes or binning."""
    probs, labels = torch.as_tensor(probs).double().cpu(), torch.as_tensor(labels).long().cpu()
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (N, C) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    confidence, predicted = probs.max(1)
    bins = bin_stats(confidence, (predicted == labels), n_bins, binning)
    n = sum(b["n"] for b in bins)
    return sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins)


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-class Brier score (Brier 1950): mean over the N images of sum_c (p_c - 1[c = y])^2, in [0, 2]."""
    probs = torch.as_tensor(probs).double().cpu()
    onehot = F.one_hot(torch.as_tensor(labels).long().cpu(), probs.shape[1]).double()
    return float(((probs - onehot) ** 2).sum(1).mean())


def scores(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, n_bins: int = 15) -> dict:
    """``{"acc", "nll", "brier", "ece", "ece_mass", "n", "temperature"}`` of ``logits`` (N, C) / temperature
    against ``labels`` (N,); NLL in nats per image, ECE with ``n_bins`` equal-width and equal-mass bins."""
    logits, labels = _check(logits, labels)
    scaled = logits / temperature
    probs = scaled.softmax(1)
    return {
        "acc": float((probs.argmax(1) == labels).double().mean()),
        "nll": float(F.cross_entropy(scaled, labels)),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels, n_bins, "width"),
        "ece_mass": expected_calibration_error(probs, labels, n_bins, "mass"),
        "n": int(labels.numel()),
        "temperature": float(temperature),
    }


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) for ``labels`` (Guo et al. 2017).

    ``logits`` (N, C) and ``labels`` (N,) must be held-out images (val), never the test split. LBFGS
    (strong-Wolfe line search) on log T, so T stays positive; starts at T = 1. Returns T (a float);
    logits that are all equal per image (no information) give T = 1."""
    logits, labels = _check(logits, labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and t > 0 else 1.0


def calibrate(val_logits, val_labels, test_logits, test_labels, n_bins: int = 15) -> dict:
    """Temperature fitted on val only and applied to test, with val and test scored before and after.

    Returns ``{"temperature", "fitted_on": "val", "n_bins", "val": {"before", "after"},
    "test": {"before", "after"}}``, each a ``scores`` dict."""
    t = fit_temperature(val_logits, val_labels)
    result = {
        "temperature": t, "fitted_on": "val", "n_bins": n_bins,
        "val": {"before": scores(val_logits, val_labels, 1.0, n_bins), "after": scores(val_logits, val_labels, t, n_bins)},
        "test": {"before": scores(test_logits, test_labels, 1.0, n_bins),
                 "after": scores(test_logits, test_labels, t, n_bins)},
    }
    warning = temperature_warning(t, len(val_labels), int((val_logits.argmax(1) == val_labels).sum()))
    if warning:
        result["warning"] = warning
    return result


# below this many validation images, or outside this range of temperatures, the fit is noise, not calibration
FEW_VAL_IMAGES = 100
PLAUSIBLE_T = (0.05, 20.0)


def temperature_warning(t: float, n_val: int, n_correct: int) -> str | None:
    """A sentence when the fitted temperature should not be trusted: few validation images, every one
    right (NLL then falls forever as T grows, or shrinks), or a temperature far outside what trained
    networks need (Guo et al. 2017 report 1-3)."""
    why = []
    if n_val < FEW_VAL_IMAGES:
        why.append(f"only {n_val} validation images")
    if n_correct in (0, n_val):
        why.append(f"{'every' if n_correct else 'no'} validation image classified right")
    if not PLAUSIBLE_T[0] <= t <= PLAUSIBLE_T[1]:
        why.append(f"T = {t:.3g} is far outside the usual 1-3")
    if not why:
        return None
    return (f"the temperature was fitted on too little evidence ({'; '.join(why)}): read the 'after' scores as "
            "unreliable, or evaluate a run with a larger data.val_fraction")


def plot_reliability(logits, labels, temperature: float, path: Path, n_bins: int = 15, title: str = "") -> Path:
    """Reliability diagram of ``logits`` (N, C) for ``labels`` (N,): accuracy vs mean confidence per
    equal-width bin, before (T = 1) and after temperature scaling, with the diagonal of perfect
    calibration and the ECE in the legend; a PNG written atomically at ``path``."""
    from matplotlib.figure import Figure

    logits, labels = _check(logits, labels)
    fig = Figure(figsize=(9, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, t, name in zip(axes, (1.0, temperature), ("before", f"after (T = {temperature:.3f})")):
        probs = (logits / t).softmax(1)
        confidence, predicted = probs.max(1)
        bins = bin_stats(confidence, predicted == labels, n_bins, "width")
        ece = expected_calibration_error(probs, labels, n_bins, "width")
        ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=1 / n_bins,
               edgecolor="black", alpha=0.75, label=f"accuracy per bin (ECE {ece:.3f})")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C3", ms=4,
                label="at the bin's mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top softmax probability)", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("accuracy")
    if title:
        fig.suptitle(title)
    return runs.save_figure(fig, path, dpi=110)


__all__ = ["bin_stats", "brier_score", "calibrate", "expected_calibration_error", "fit_temperature",
           "plot_reliability", "scores"]
