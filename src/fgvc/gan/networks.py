"""SNGAN-projection networks (Miyato & Koyama 2018): ResNet generator with class-conditional
batch norm, ResNet discriminator with spectral norm on every layer and a projection head.

Channel layouts follow the reference 64x64 and 128x128 configurations; 32x32 drops the
widest block on each side so tests and CPU runs stay small. Images are in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from fgvc.errors import UserError

# Channel multipliers of ``ch``. Generator: the 4x4 input then one entry per upsampling block.
G_CHANNELS = {32: [8, 4, 2, 1], 64: [16, 8, 4, 2, 1], 128: [16, 16, 8, 4, 2, 1]}
# Discriminator: the optimised first block then one entry per residual block.
D_CHANNELS = {32: [1, 2, 4, 8], 64: [1, 2, 4, 8, 16], 128: [1, 2, 4, 8, 16, 16]}
IMAGE_SIZES = tuple(G_CHANNELS)


def check_image_size(image_size: int) -> None:
    if image_size not in G_CHANNELS:
        raise UserError(
            f"GAN image size {image_size} is not supported; set data.image_size to one of "
            f"{', '.join(map(str, IMAGE_SIZES))}"
        )


def _init(module: nn.Module, gain: float = 1.0) -> nn.Module:
    # Glorot-uniform as in the reference: gain sqrt(2) inside residual branches (ReLU follows),
    # 1 for shortcuts, linear layers and embeddings.
    nn.init.xavier_uniform_(module.weight, gain=gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def _sn(module: nn.Module, gain: float = 1.0) -> nn.Module:
    return spectral_norm(_init(module, gain))


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without affine terms, then a per-class gain (init 1) and bias (init 0)."""

    def __init__(self, num_features: int, n_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(n_classes, num_features)
        self.beta = nn.Embedding(n_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.bn(x)
        return self.gamma(y)[:, :, None, None] * h + self.beta(y)[:, :, None, None]


class GBlock(nn.Module):
    """Pre-activation residual block: CBN, ReLU, 2x nearest upsample, conv3x3, CBN, ReLU, conv3x3."""

    def __init__(self, c_in: int, c_out: int, n_classes: int):
        super().__init__()
        self.b1 = ConditionalBatchNorm2d(c_in, n_classes)
        self.c1 = _init(nn.Conv2d(c_in, c_out, 3, padding=1), math.sqrt(2))
        self.b2 = ConditionalBatchNorm2d(c_out, n_classes)
        self.c2 = _init(nn.Conv2d(c_out, c_out, 3, padding=1), math.sqrt(2))
        self.c_sc = _init(nn.Conv2d(c_in, c_out, 1))  # always learnable: every block upsamples

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.relu(self.b1(x, y))
        h = self.c1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.c2(F.relu(self.b2(h, y)))
        return h + self.c_sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    """z (N, z_dim) ~ N(0, 1) and class ids (N,) -> images (N, 3, S, S) in [-1, 1]."""

    def __init__(self, n_classes: int, image_size: int = 64, ch: int = 64, z_dim: int = 128):
        super().__init__()
        check_image_size(image_size)
        self.n_classes, self.image_size, self.ch, self.z_dim = n_classes, image_size, ch, z_dim
        mults = G_CHANNELS[image_size]
        self.bottom = mults[0] * ch
        self.l1 = _init(nn.Linear(z_dim, 4 * 4 * self.bottom))
        self.blocks = nn.ModuleList(
            GBlock(a * ch, b * ch, n_classes) for a, b in zip(mults[:-1], mults[1:])
        )
        self.bn = nn.BatchNorm2d(ch)
        self.conv_out = _init(nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.l1(z).view(z.shape[0], self.bottom, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.conv_out(F.relu(self.bn(h))))


class DBlock(nn.Module):
    """Pre-activation residual block: ReLU, conv3x3, ReLU, conv3x3, optional 2x2 average pool."""

    def __init__(self, c_in: int, c_out: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.c1 = _sn(nn.Conv2d(c_in, c_in, 3, padding=1), math.sqrt(2))
        self.c2 = _sn(nn.Conv2d(c_in, c_out, 3, padding=1), math.sqrt(2))
        learnable = c_in != c_out or downsample
        self.c_sc = _sn(nn.Conv2d(c_in, c_out, 1)) if learnable else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        sc = self.c_sc(x) if self.c_sc is not None else x
        if self.downsample:
            h, sc = F.avg_pool2d(h, 2), F.avg_pool2d(sc, 2)
        return h + sc


class OptimizedDBlock(nn.Module):
    """First block: no ReLU on the raw image, and the shortcut pools before its 1x1 conv."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.c1 = _sn(nn.Conv2d(c_in, c_out, 3, padding=1), math.sqrt(2))
        self.c2 = _sn(nn.Conv2d(c_out, c_out, 3, padding=1), math.sqrt(2))
        self.c_sc = _sn(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class Discriminator(nn.Module):
    """Images (N, 3, S, S) in [-1, 1] and class ids (N,) -> logits (N,): linear(h) + <embed(y), h>."""

    def __init__(self, n_classes: int, image_size: int = 64, ch: int = 64):
        super().__init__()
        check_image_size(image_size)
        self.n_classes, self.image_size, self.ch = n_classes, image_size, ch
        mults = D_CHANNELS[image_size]
        blocks: list[nn.Module] = [OptimizedDBlock(3, mults[0] * ch)]
        for i, (a, b) in enumerate(zip(mults[:-1], mults[1:])):
            # the reference 128x128 model keeps its last block at 4x4 (no downsampling)
            last = i == len(mults) - 2
            blocks.append(DBlock(a * ch, b * ch, downsample=not (last and image_size == 128)))
        self.blocks = nn.Sequential(*blocks)
        width = mults[-1] * ch
        self.linear = _sn(nn.Linear(width, 1))
        self.embed = _sn(nn.Embedding(n_classes, width))

    def features(self, x: Tensor) -> Tensor:
        """Globally sum-pooled ReLU features (N, C)."""
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def project(self, h: Tensor, y: Tensor) -> Tensor:
        """The projection term <embed(y), h> (N,); only row y of the embedding takes part."""
        return (self.embed(y) * h).sum(dim=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.features(x)
        return self.linear(h).squeeze(1) + self.project(h, y)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
