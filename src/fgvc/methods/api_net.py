"""api_net: attentive pairwise interaction (Zhuang, Wang and Qiao 2020, "Learning Attentive Pairwise
Interaction for Fine-Grained Classification", AAAI, arXiv 2002.10191).

What it changes:

- the training step: for each image x_i of the batch, its nearest classmate (intra pair) and its
  nearest image of another class (inter pair) by Euclidean distance between the pooled features
  (the batch's feature space). For each pair (x1, x2): the mutual vector x_m = MLP([x1, x2]) (Eq. 1),
  the gates g_j = sigmoid(x_m * x_j) (Eq. 2), the four gated features x_j^self = x_j + x_j * g_j and
  x_j^other = x_j + x_j * g_k (Eq. 3), their logits through the classifier, and the loss: cross-entropy
  of all four against each image's own label (Eq. 6) plus the score-ranking loss
  sum max(0, p_j^other - p_j^self + margin) over the true-class probabilities p (Eq. 7, margin 0.05),
  which asks an image's own gate to help it more than its partner's;
- the head: global average pooling, the classifier, and the interaction's MLP (used in training only);
- inference: the classifier on the pooled features, with no pairs (the plain path): a run's model is
  a GAP + linear classifier plus two unused layers (so CAM explains it as a plain model).

It needs batches in which every image has a classmate: P classes x K >= 2 images (``data.sampler=pk``,
the authors' ``BalancedBatchSampler``) with P >= 2 classes; ``fgvc train`` refuses api_net without them
(``mine_pairs`` marks a missing partner -1, which the training step would otherwise index with). Mixup and CutMix
are refused (the pairs need one class per image); label smoothing reaches the cross-entropy.

Settings (config keys ``method.*``, defaults the authors'): ``api_hidden`` = 512, the MLP's hidden
width; ``api_margin`` = 0.05, the ranking margin. The dropout before the MLP's second layer and before
the classifier is ``model.dropout`` (the authors use 0.5; fgvc's default is 0).

From the authors' code (PeiqinZhuang/API-Net, ``models.py``, ``train.py``; the paper leaves these out):
the MLP is linear (2C -> 512), dropout, linear (512 -> C) with no activation between; distances are
squared Euclidean on detached features, the nearest other image of the same class or of another class;
the batch's 2B pairs (one intra and one inter per image) are scored together, the cross-entropy a mean
over the 8B gated logits, the ranking loss a mean over the 4B (self, other) score pairs (PyTorch's
MarginRankingLoss), weight 1. Differences, each stated: the four gated features go through the
classifier in one call (the authors make four; dropout draws independent masks either way); the
train accuracy is read from the plain logits of the batch; the authors' schedule (backbone frozen for
the first 8 epochs, SGD lr 0.01 cosine over 100 epochs) is not reproduced: fgvc's optimizer and
``model.trainable`` apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc.methods.base import Method as BaseMethod


def mine_pairs(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(intra, inter): for each image i, the index of its nearest other image of the same class and of its
    nearest image of another class, by Euclidean distance between ``features`` (B, D) (detached; the
    first index on a tie). An image without a classmate in the batch gets -1 as intra partner."""
    f = features.detach().float()
    distances = torch.cdist(f, f)
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    intra_d, intra = torch.where(same & ~eye, distances, float("inf")).min(1)  # one reduction: distance and index
    inter_d, inter = torch.where(~same, distances, float("inf")).min(1)
    return torch.where(torch.isinf(intra_d), -1, intra), torch.where(torch.isinf(inter_d), -1, inter)


def rank_loss(self_scores: Tensor, other_scores: Tensor, margin: float) -> Tensor:
    """Mean over pairs of max(0, other - self + margin) (Eq. 7; PyTorch's MarginRankingLoss with target 1)."""
    return F.margin_ranking_loss(self_scores, other_scores, torch.ones_like(self_scores), margin=margin)


class APIHead(nn.Module):
    """The plain head (global average pooling, dropout, linear) and the pairwise interaction's MLP."""

    def __init__(self, channels: int, num_classes: int, dropout: float, hidden: int):
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.map1, self.map2 = nn.Linear(2 * channels, hidden), nn.Linear(hidden, channels)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, fmap: Tensor) -> Tensor:
        """The plain path: the classifier on the pooled features (inference)."""
        return self.fc(self.drop(self.pool(fmap)))

    def gates(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """(g1, g2) in (0, 1): sigmoid(x_m * x_j), x_m = map2(drop(map1([x1, x2]))) the mutual vector."""
        mutual = self.map2(self.drop(self.map1(torch.cat([x1, x2], dim=1))))
        return torch.sigmoid(mutual * x1), torch.sigmoid(mutual * x2)

    def interact(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Pairs (x1, x2) of pooled features (N, C) each -> (4N, classes) logits of x1^self, x2^self,
        x1^other, x2^other (Eq. 3), in that order."""
        g1, g2 = self.gates(x1, x2)
        gated = torch.cat([x1 + x1 * g1, x2 + x2 * g2, x1 + x1 * g2, x2 + x2 * g1])
        return self.fc(self.drop(gated))


class Method(BaseMethod):
    name_ = "api_net"
    takes_mixing = False  # the pairs need one class per image
    takes_adversarial = False  # the adversarial loss would train the plain path only
    adversarial_refusal = "the adversarial loss would train only its plain path, not the pairwise interaction"
    needs_pk_batches = True
    gap_linear_inference = True  # the plain path: CAM explains it as it explains the plain head
    # loss.center and pairwise confusion would read the 8B gated rows, each image several times over
    takes_feature_losses = False
    scores = "eight rows of gated logits per image (two pairs, four gated features each)"

    def make_head(self, channels: int, num_classes: int, dropout: float, *, api_hidden: int = 512,
                  api_margin: float = 0.05) -> nn.Module:
        return APIHead(channels, num_classes, dropout, api_hidden)

    def forward(self, x: Tensor, labels: Tensor | None = None):
        """Images in [0, 1] -> logits; with ``labels`` (training, through the DDP/Fabric wrapper so that every
        parameter is used in its pass): (the 8B gated logits, the (2B, 2) pair indices, the plain logits)."""
        if labels is None:
            return super().forward(x)
        pooled = self.head_module.pool(self.features(self.normalize(x)))
        intra, inter = mine_pairs(pooled, labels)
        anchors = torch.arange(len(labels), device=labels.device)
        pairs = torch.stack([torch.cat([anchors, anchors]), torch.cat([intra, inter])], dim=1)
        gated = self.head_module.interact(pooled[pairs[:, 0]], pooled[pairs[:, 1]])
        with torch.no_grad():  # what train accuracy is read from: the inference path on this batch
            plain = self.head(pooled)
        return gated, pairs, plain

    def train_loss(self, x: Tensor, target: Tensor, criterion, forward) -> tuple[Tensor, Tensor]:
        labels = target.argmax(1)
        gated, pairs, plain = forward(x, labels)
        first, second = pairs[:, 0], pairs[:, 1]
        own = torch.cat([first, second, first, second])  # whose label each of the 8B gated logits carries
        ce = criterion(gated, target[own])
        n = len(own) // 2
        scores = F.softmax(gated.float(), dim=1).gather(1, labels[own].view(-1, 1)).view(-1)
        return ce + rank_loss(scores[:n], scores[n:], self.settings["api_margin"]), plain
