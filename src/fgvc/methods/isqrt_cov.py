"""isqrt_cov: iSQRT-COV, global covariance pooling normalised by an iterative matrix square root
(Li, Xie, Wang and Gao, CVPR 2018, "Towards Faster Training of Global Covariance Pooling Networks
by Iterative Matrix Square Root Normalization", arXiv 1712.01034).

What it changes: the head. The backbone's last feature map is reduced to d channels (1x1
convolution + BatchNorm + ReLU); its covariance over the h x w locations, Sigma = X I_hat X^T with
I_hat = (I - 1 1^T / M) / M (M = h w), is pre-normalised by its trace, A = Sigma / tr(Sigma); the
coupled Newton-Schulz iteration (Y_0 = A, Z_0 = I, T_k = (3 I - Z_{k-1} Y_{k-1}) / 2,
Y_k = Y_{k-1} T_k, Z_k = T_k Z_{k-1}) gives Y_N ~ A^(1/2); post-compensation multiplies by
sqrt(tr(Sigma)), so the result approximates Sigma^(1/2); its upper triangle (d (d + 1) / 2 values)
goes through dropout to a linear classifier. Training step and inference are the plain ones. The
iteration uses only matrix products, so it runs in low precision on GPUs and exports to ONNX; it is
computed here in float32 whatever the autocast (the trace normalisation needs the range).

Settings (config keys): ``method.isqrt_dim`` (d, 256 in the paper), ``method.isqrt_iterations``
(N, 5 in the paper's ImageNet and fine-grained experiments).

From the authors' code (jiangtaoxie/fast-MPN-COV, ``src/representation/MPNCOV.py``): the reduction
block is Conv2d(bias=False) + BatchNorm2d + ReLU; the upper triangle includes the diagonal, read row
by row; the last iteration computes Y_N only. Their hand-written backward is replaced here by
autograd through the same products (gradcheck in the tests).

Differences from the authors' setup, each stated: the head reads the backbone's last map at the stride
``model.output_stride`` sets (32, the backbone's own, by default) and its 1x1 reduction starts from random
weights, where the authors' network (``src/network/mpncovresnet.py``, ``MPNCOVResNet``) sets ResNet's
layer4 to stride 1 (stride 16: 14 x 14 = 196 locations at 224 px, 28 x 28 at 448 px) and fine-grained
training starts from their ImageNet-trained model, reduction layer included. ``model.output_stride=16``
gives the same stride-16 map by dilating the last stage (the authors' layer4 strides by 1 without
dilating). At 224-227 px the stride-32 map has 7 x 7 to 8 x 8 = 49-64 locations, and a covariance of M
centred locations has rank at most M - 1: the 256 x 256 matrix has rank <= 48-63, so most of its
eigenvalues (and of its square root's) are zero; at stride 16, rank <= 195-224.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fgvc.methods.base import Method as BaseMethod
from fgvc.methods.bilinear import reduction


def covariance(fmap: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C, C): the covariance of the C-dimensional features over the h w locations
    (the population covariance, 1/M, as the paper's I_hat)."""
    b, c, h, w = fmap.shape
    x = fmap.reshape(b, c, h * w)
    x = x - x.mean(dim=2, keepdim=True)
    return x @ x.transpose(1, 2) / (h * w)


def newton_schulz_sqrt(sigma: Tensor, iterations: int) -> Tensor:
    """(B, d, d) symmetric positive semi-definite -> its approximate square root: trace pre-normalisation,
    ``iterations`` coupled Newton-Schulz steps, post-compensation by sqrt(trace)."""
    d = sigma.shape[-1]
    eye = torch.eye(d, dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(torch.finfo(sigma.dtype).tiny)[:, None, None]
    y, z = sigma / trace, eye
    for k in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, (t @ z if k < iterations - 1 else z)  # the last step needs Y only
    return y * trace.sqrt()


def upper_triangle(m: Tensor, index: Tensor) -> Tensor:
    """(B, d, d) -> (B, d (d + 1) / 2): the entries on and above the diagonal, row by row (``index``
    from ``triu_index``)."""
    return m.flatten(1).index_select(1, index)


def triu_index(d: int) -> Tensor:
    """Flat indices of the upper triangle (diagonal included) of a d x d matrix, row by row."""
    rows, cols = torch.triu_indices(d, d)
    return rows * d + cols


class CovarianceHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, dropout: float, dim: int, iterations: int):
        super().__init__()
        self.reduce = reduction(channels, dim)
        self.iterations = iterations
        d = dim or channels
        self.register_buffer("triu", triu_index(d), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d * (d + 1) // 2, num_classes)

    def pooled(self, fmap: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, d (d + 1) / 2): the upper triangle of the covariance's square root."""
        x = self.reduce(fmap)
        with torch.autocast(x.device.type, enabled=False):
            sigma = covariance(x.float())
            return upper_triangle(newton_schulz_sqrt(sigma, self.iterations), self.triu)

    def forward(self, fmap: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pooled(fmap)))


class Method(BaseMethod):
    name_ = "isqrt_cov"

    def make_head(self, channels: int, num_classes: int, dropout: float, *, isqrt_dim: int = 256,
                  isqrt_iterations: int = 5) -> nn.Module:
        return CovarianceHead(channels, num_classes, dropout, isqrt_dim, isqrt_iterations)
