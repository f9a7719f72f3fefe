"""Accuracy, top-5 and loss of a model over a loader; used by training and `fgvc eval`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm


@torch.no_grad()
def evaluate(model, loader, autocast=None, device=None, progress: bool = False, desc: str = "eval",
             reduce=None, predictions: bool = False, batches=None, logits: bool = False) -> dict:
    """{'loss', 'acc', 'top5', 'n'} over the loader; accuracies are fractions in [0, 1].

    ``predictions`` adds 'labels' and 'predicted' (CPU tensors, in loader order) for
    per-class reports; ``logits`` adds 'logits' (N, C) float32 CPU tensor and 'labels', in loader
    order (calibration, open-set scores).

    ``reduce`` sums a tensor over processes (multi-device training): each process evaluates
    its own shard and the sums, not the per-shard means, are combined, so the result is exact.
    ``batches`` wraps the batch iterator (multi-device training keeps the processes in step with it).
    """
    was_training = model.training
    model.eval()
    # sums stay on the device (one sync at the end, not three per batch); float64 keeps counts exact
    sums = None  # loss, top-1 correct, top-5 correct, images
    labels, predicted, kept = [], [], []
    ctx = autocast if autocast is not None else _null
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for batch in (batches(bar) if batches is not None else bar):
        x, y = batch[0], batch[1]
        if device is not None:
            x, y = x.to(device), y.to(device)
        with ctx():
            out = model(x)
        out = out.float()
        topk = out.topk(min(5, out.shape[1]), dim=1).indices
        batch_sums = torch.stack([F.cross_entropy(out, y, reduction="sum"), (topk[:, 0] == y).sum(),
                                  (topk == y[:, None]).any(dim=1).sum(), torch.tensor(y.shape[0], device=y.device)])
        sums = batch_sums.double() if sums is None else sums + batch_sums.double()
        if logits:
            kept.append(out.cpu())
        if predictions or logits:
            labels.append(y.cpu())
            predicted.append(topk[:, 0].cpu())
    model.train(was_training)
    sums = torch.zeros(4, dtype=torch.float64) if sums is None else sums.cpu()
    if reduce is not None:
        sums = reduce(sums)
    loss_sum, correct, correct5, total = sums.tolist()
    total = int(total)
    if total == 0:
        result = {"loss": float("nan"), "acc": float("nan"), "top5": float("nan"), "n": 0}
    else:
        result = {"loss": loss_sum / total, "acc": correct / total, "top5": correct5 / total, "n": total}
    if logits:
        result["logits"] = torch.cat(kept) if kept else torch.zeros(0, 0)
    if predictions or logits:
        result["labels"] = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
        result["predicted"] = torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.long)
    return result


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
