"""bilinear: bilinear pooling (B-CNN; Lin, RoyChowdhury and Maji, ICCV 2015, arXiv 1504.07889).

What it changes: the head. The backbone's last feature map X (C channels at h x w locations) is
pooled into the average outer product of its local features, B = X X^T / (h w) (a C x C matrix),
flattened, passed through the signed square root sign(b) sqrt(|b|) and L2-normalised, then a linear
classifier (after dropout) maps it to logits. Training step and inference are the plain ones.

Setting: ``dim`` (config key ``method.bilinear_dim``): 0 (the paper) pools the backbone's own
channels; d > 0 first reduces them to d with a 1x1 convolution + BatchNorm + ReLU (the reduction
iSQRT-COV uses), which keeps the C^2-dimensional feature and its classifier small for wide
backbones (MobileNetV2's 1280 channels give 1.6M features per image, and 82M classifier weights for
50 classes).

From the authors' code (the B-CNN layer of jiangtaoxie/fast-MPN-COV, ``src/representation/BCNN.py``,
which matches the paper): the average over locations is 1/(h w), and 1e-8 is added under the signed
square root so its gradient stays finite at 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc.methods.base import Method as BaseMethod

SQRT_EPS = 1e-8  # under the signed square root (the authors' code)


def bilinear_pool(fmap: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C, C): the outer product of each location's feature, averaged over locations."""
    b, c, h, w = fmap.shape
    x = fmap.reshape(b, c, h * w)
    return x @ x.transpose(1, 2) / (h * w)


def signed_sqrt_l2(v: Tensor, eps: float = SQRT_EPS) -> Tensor:
    """sign(v) sqrt(|v| + eps), then L2 normalisation over the last dimension."""
    return F.normalize(torch.sign(v) * torch.sqrt(v.abs() + eps), dim=-1)


def reduction(channels: int, dim: int) -> nn.Module:
    """1x1 convolution to ``dim`` channels + BatchNorm + ReLU (iSQRT-COV's reduction; identity for dim 0)."""
    if dim == 0:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(channels, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))


class BilinearHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, dropout: float, dim: int):
        super().__init__()
        self.reduce = reduction(channels, dim)
        d = dim or channels
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d * d, num_classes)

    def pooled(self, fmap: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, d^2): the normalised bilinear feature the classifier reads."""
        x = self.reduce(fmap)
        # float32 whatever the autocast: bf16 outer products lose the small entries the square root amplifies
        with torch.autocast(x.device.type, enabled=False):
            return signed_sqrt_l2(bilinear_pool(x.float()).flatten(1))

    def forward(self, fmap: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pooled(fmap)))


class Method(BaseMethod):
    name_ = "bilinear"

    def make_head(self, channels: int, num_classes: int, dropout: float, *, bilinear_dim: int = 0) -> nn.Module:
        return BilinearHead(channels, num_classes, dropout, bilinear_dim)
