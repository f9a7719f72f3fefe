"""Label-noise audit: out-of-fold predicted probabilities from linear probes on frozen features, ranked by
cleanlab's confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021; the `cleanlab` library).

The features are a frozen backbone's (the input of its classification head, ``fgvc.train.probe.head_inputs``),
of the whole training set (train and val) under the eval transform, extracted once. The training set is cut
into k stratified folds (scikit-learn's StratifiedKFold); for each fold a linear probe
(``fgvc.models.linear_probe.fit_linear_probe``: L2 logistic regression, full-batch L-BFGS) is fitted on the other
folds and predicts the held-out fold. Its weight decay is swept once, on a random fifth of the first
fold's training part, and kept for every fold. Every image thus gets probabilities from a probe that never saw its label, and cleanlab's
``find_label_issues`` flags the images whose given label the probabilities contradict; they are ranked by
cleanlab's label quality score (self-confidence: the probability of the given class; low = suspect).

A run's own backbone (``--run``) was trained on these labels and partly memorised them, so it hides some
errors; a pretrained backbone that never saw them (``--model`` / ``--weights``) is the cleaner witness.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from fgvc.errors import UserError

DEFAULT_FOLDS = 5


def check_folds(labels, folds: int, class_names: list[str] | None = None) -> None:
    """UserError when ``folds`` < 2 or some class has fewer images than folds."""
    if folds < 2:
        raise UserError(f"--folds {folds} is too few; out-of-fold predictions need at least 2 folds")
    counts = Counter(int(y) for y in labels)
    label, n = min(counts.items(), key=lambda kv: kv[1])
    if n < folds:
        name = class_names[label] if class_names else str(label)
        raise UserError(f"class {name!r} has {n} training image(s), fewer than --folds {folds}; lower --folds "
                        f"to {max(n, 2)} or add images to that class")


def oof_probabilities(features: torch.Tensor, labels, num_classes: int, folds: int = DEFAULT_FOLDS,
                      seed: int = 0) -> np.ndarray:
    """(N, num_classes) out-of-fold softmax probabilities of linear probes on ``features`` (N, D) with
    integer ``labels`` (N,); each row comes from the probe of the fold that held that image out."""
    from fgvc.audit import require
    from fgvc.models.linear_probe import fit_linear_probe

    StratifiedKFold = require("sklearn.model_selection").StratifiedKFold  # noqa: N806 (a class)

    x = torch.as_tensor(features).float()
    y = torch.as_tensor(np.asarray(labels)).long()
    check_folds(y.tolist(), folds)
    probs = np.zeros((len(y), num_classes), dtype=np.float64)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    # the weight decay is swept once, within the first fold's training part (a random fifth as val),
    # never on held-out images, then kept for every fold
    order = np.random.default_rng(seed).permutation(splits[0][0])
    n_val = max(1, len(order) // 5)
    val, inner = order[:n_val], order[n_val:]
    chosen = fit_linear_probe(x[inner], y[inner], x[val], y[val], num_classes)["weight_decay"]
    empty_x, empty_y = x[:0], y[:0]
    for fit_idx, held_idx in splits:
        probe = fit_linear_probe(x[fit_idx], y[fit_idx], empty_x, empty_y, num_classes, weight_decays=(chosen,))
        logits = x[held_idx] @ probe["weight"].T + probe["bias"]
        probs[held_idx] = torch.softmax(logits.double(), dim=1).numpy()
    return probs


def rank_label_issues(labels, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices cleanlab flags as label issues, most likely first; label quality score of every image,
    in [0, 1], low = suspect), from cleanlab.filter.find_label_issues and cleanlab.rank."""
    from fgvc.audit import require

    find_label_issues = require("cleanlab.filter").find_label_issues
    get_label_quality_scores = require("cleanlab.rank").get_label_quality_scores
    labels = np.asarray(labels, dtype=np.int64)
    flagged = find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(labels, pred_probs, method="self_confidence")
    return np.asarray(flagged, dtype=np.int64), np.asarray(scores, dtype=np.float64)


def feature_pipeline(run, image_size: int):
    """The pipeline the audit's features see: a run's own evaluation pipeline (its data.image_size and
    data.crop_ratio), else the plain evaluation pipeline at ``image_size``."""
    from fgvc import api
    from fgvc.data.transforms import eval_transform

    return api.Run(run).eval_transform if run is not None else eval_transform(image_size)


def find_label_issues(name: str, root, run=None, model_name: str | None = None, weights: str | None = None,
                      image_size: int = 224, folds: int = DEFAULT_FOLDS, seed: int = 0,
                      val_fraction: float = 0.1, batch_size: int = 64, progress: bool = False) -> dict:
    """Audit the training labels (train and val) of dataset ``name``: returns ``{"suspects": [row, ...]
    (flagged images, most likely first: path, given, suggested, score, given_prob, suggested_prob),
    "oof_acc", "images", "folds", "features", "feature_dim"}``. Bad folds fail before features are computed."""
    from torch.utils.data import DataLoader

    from fgvc.audit.duplicates import dataset_splits
    from fgvc.audit.embeddings import backbone
    from fgvc.data import FineGrainedDataset
    from fgvc.train.probe import head_inputs

    samples, _, class_names = dataset_splits(name, root, val_fraction, seed)
    labels = np.array([s.label for s in samples])
    check_folds(labels, folds, class_names)
    model, size, source = backbone(run, model_name, weights, image_size)
    pipeline = feature_pipeline(run, size)
    dataset = FineGrainedDataset(samples, class_names, pipeline, name=name, split="train+val")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, y = head_inputs(model, DataLoader(dataset, batch_size=batch_size, num_workers=0), device, progress,
                       "features")
    probs = oof_probabilities(x, y, len(class_names), folds, seed)
    flagged, scores = rank_label_issues(labels, probs)
    suggested = probs.argmax(1)
    rows = [{"path": str(samples[i].path), "given": class_names[labels[i]], "suggested": class_names[suggested[i]],
             "score": round(float(scores[i]), 6), "given_prob": round(float(probs[i, labels[i]]), 6),
             "suggested_prob": round(float(probs[i, suggested[i]]), 6)} for i in flagged]
    return {"suspects": rows, "oof_acc": float((suggested == labels).mean()), "images": len(samples),
            "folds": folds, "features": source, "feature_dim": int(x.shape[1]), "scores": scores}


__all__ = ["DEFAULT_FOLDS", "check_folds", "find_label_issues", "oof_probabilities",
           "rank_label_issues"]
