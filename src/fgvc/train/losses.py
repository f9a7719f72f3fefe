"""Losses a training step of one forward pass per image can add to its cross-entropy: center loss
(``loss.center``) and pairwise confusion (``loss.pairwise_confusion``).

Both act through the training step's *criterion*, the function ``(logits, soft targets) -> loss``
a step scores its forward passes with: each call adds the terms, the center loss on the input of the
final linear layer's latest training call. That is the loss defined below only for a step of one
forward pass and one criterion call per image (the plain loop, ``bilinear``, ``isqrt_cov``); the
training preflight (``fgvc.train.checks``) refuses both for a method whose step scores several passes
or calls (``Method.takes_feature_losses``).
A class is the argmax of a soft target (the label itself, or under Mixup/CutMix the class of the
larger weight).

- **Center loss** (Wen et al. 2016, "A Discriminative Feature Learning Approach for Deep Face
  Recognition", ECCV; Eq. 2 and Algorithm 1): ``L_C = 1/2 mean_i ||f_i - c_{y_i}||^2`` on the
  features ``f`` the final linear layer reads (its input, captured by a forward pre-hook on
  ``model.head``, so dropout, when ``model.dropout`` > 0, has acted on them), with one centre per
  class. Centres are not learned by gradient: after each scored forward they move by the paper's
  rule (Eq. 4), ``c_j <- c_j - alpha * sum_{i: y_i=j} (c_j - f_i) / (1 + n_j)``, ``alpha`` =
  ``loss.center_alpha`` (0.5 in the paper). The 1/2 and the mean over the batch are the authors'
  Caffe layer's (``loss = sum / M / 2``). Centres start at zero (the rule pulls them to the class
  means within a few steps), are summed over processes before each update (DDP keeps one set), and
  travel in ``last_state.pt``, so a resumed run continues with them.
- **Pairwise confusion** (Dubey et al. 2018, "Pairwise Confusion for Fine-Grained Visual
  Classification", ECCV; Eq. 5, the Euclidean confusion ``||p_i - p_j||_2^2``): the mean squared
  Euclidean distance between the softmax probability vectors of every pair of images of different
  classes in the batch (two one-hot vectors of different classes are 2 apart; a batch of one class
  adds 0). The authors' code pairs the batch's first half with its second half, uses the distance
  itself, not its square, and does not check the classes; fgvc follows the paper's definition and
  takes every cross-class pair (a lower-variance estimate of the same expectation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pairwise_confusion(probs: Tensor, classes: Tensor) -> Tensor:
    """Mean over pairs (i < j) with ``classes[i] != classes[j]`` of ``||probs[i] - probs[j]||^2``;
    0 (with a gradient path) when the batch holds one class. ``probs`` (B, C) rows on the simplex."""
    probs = probs.float()
    distances = (probs.unsqueeze(1) - probs.unsqueeze(0)).pow(2).sum(dim=2)  # (B, B); no sqrt, no NaN gradient at 0
    pairs = (classes.view(-1, 1) != classes.view(1, -1)).triu(diagonal=1).float()
    return (distances * pairs).sum() / pairs.sum().clamp(min=1)  # no host sync: the step stays asynchronous


def center_loss(features: Tensor, classes: Tensor, centers: Tensor) -> Tensor:
    """``1/2 mean_i ||features[i] - centers[classes[i]]||^2`` (Wen et al. 2016, Eq. 2, per image);
    the centres are constants here (they move by ``center_update``, not by gradient)."""
    diff = features.float() - centers.detach().index_select(0, classes)
    return 0.5 * diff.pow(2).sum(dim=1).mean()


def center_update(features: Tensor, classes: Tensor, centers: Tensor, alpha: float,
                  reduce: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The centres after Wen et al.'s rule (Eq. 4): ``c_j - alpha * sum_{i: y_i=j} (c_j - f_i) / (1 + n_j)``
    for each class j of the batch; classes absent keep their centre. ``reduce`` sums the per-class sums
    and counts over processes (DDP), so every process makes the same update."""
    features = features.detach().float()
    sums = torch.zeros_like(centers).index_add_(0, classes, features)
    counts = torch.zeros(len(centers), device=centers.device).index_add_(
        0, classes, torch.ones(len(classes), device=centers.device))
    if reduce is not None:
        both = reduce(torch.cat([sums, counts.view(-1, 1)], dim=1))
        sums, counts = both[:, :-1], both[:, -1]
    delta = (counts.view(-1, 1) * centers - sums) / (1 + counts.view(-1, 1))
    return centers - alpha * delta


class Criterion:
    """``(logits, soft targets) -> loss``: ``base`` (the soft cross-entropy) plus ``pc_weight`` x pairwise
    confusion plus ``center_weight`` x center loss, the latter on the input of ``model.head`` in the
    forward pass that gave ``logits`` (``attach`` installs the hook). ``reduce`` sums over processes."""

    def __init__(self, base: Callable[[Tensor, Tensor], Tensor], pc_weight: float = 0.0, center_weight: float = 0.0,
                 center_alpha: float = 0.5, num_classes: int = 0, reduce: Callable[[Tensor], Tensor] | None = None):
        self.base, self.pc_weight, self.center_weight, self.alpha = base, pc_weight, center_weight, center_alpha
        self.num_classes, self.reduce = num_classes, reduce
        self.centers: Tensor | None = None  # (C, D), made on the first features seen (D is the model's)
        self.features: Tensor | None = None  # the head's input of the latest training forward, not yet scored
        self.handle = None

    def attach(self, model: nn.Module) -> None:
        """Capture the input of ``model.head`` (the final linear layer) in training forwards with autograd on;
        the eval-mode forwards of an attack's search or a method's inference are not the ones scored."""
        if self.center_weight <= 0 or self.handle is not None:
            return

        def capture(module, args):
            if module.training and torch.is_grad_enabled():
                self.features = args[0].flatten(1)

        self.handle = model.head.register_forward_pre_hook(capture)

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = self.base(logits, target)
        classes = target.argmax(1)
        if self.pc_weight > 0:
            loss = loss + self.pc_weight * pairwise_confusion(F.softmax(logits.float(), dim=1), classes)
        features, self.features = self.features, None
        if self.center_weight > 0 and features is not None and len(features) == len(logits):
            if self.centers is None:
                self.centers = torch.zeros(self.num_classes or target.shape[1], features.shape[1],
                                           device=features.device)
            loss = loss + self.center_weight * center_loss(features, classes, self.centers)
            self.centers = center_update(features, classes, self.centers, self.alpha, self.reduce)
        return loss

    def state_dict(self) -> dict:
        """What a resumed run needs: the centres (None before the first step, or without center loss)."""
        return {"centers": None if self.centers is None else self.centers.detach().cpu()}

    def load_state_dict(self, state: dict | None, device: torch.device | str = "cpu") -> None:
        centers = (state or {}).get("centers")
        self.centers = None if centers is None else centers.to(device)
