"""Accuracy, top-5 and loss of a model over a loader; used by training and `fgvc eval`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm


@torch.no_grad()
def evaluate(model, loader, autocast=None, device=None, progress: bool = False, desc: str = "eval",
             reduce=None, predictions: bool = False) -> dict:
    """{'loss', 'acc', 'top5', 'n'} over the loader; accuracies are fractions in [0, 1].

    ``predictions`` adds 'labels' and 'predicted' (CPU tensors, in loader order) for
    per-class reports.

    ``reduce`` sums a tensor over processes (multi-device training): each process evaluates
    its own shard and the sums, not the per-shard means, are combined, so the result is exact.
    """
    was_training = model.training
    model.eval()
    total, loss_sum, correct, correct5 = 0, 0.0, 0, 0
    labels, predicted = [], []
    ctx = autocast if autocast is not None else _null
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = batch[0], batch[1]
        if device is not None:
            x, y = x.to(device), y.to(device)
        with ctx():
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        correct += (topk[:, 0] == y).sum().item()
        correct5 += (topk == y[:, None]).any(dim=1).sum().item()
        if predictions:
            labels.append(y.cpu())
            predicted.append(topk[:, 0].cpu())
        total += y.shape[0]
    model.train(was_training)
    if reduce is not None:
        sums = reduce(torch.tensor([loss_sum, correct, correct5, total], dtype=torch.float64))
        loss_sum, correct, correct5, total = sums.tolist()
        total = int(total)
    if total == 0:
        result = {"loss": float("nan"), "acc": float("nan"), "top5": float("nan"), "n": 0}
    else:
        result = {"loss": loss_sum / total, "acc": correct / total, "top5": correct5 / total, "n": total}
    if predictions:
        result["labels"] = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
        result["predicted"] = torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.long)
    return result


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
