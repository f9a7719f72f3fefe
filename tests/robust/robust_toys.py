"""A toy fine-grained task for attack tests: which of four close colours is the blob.

Colours differ by 0.2 per channel, so an eps of 0.1 can move a blob halfway to
another class: a standard model is accurate but fragile, and adversarial
training has room to help.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

D = 0.1
PALETTE = torch.tensor([
    [0.5 + D, 0.5 - D, 0.5 - D],
    [0.5 - D, 0.5 + D, 0.5 - D],
    [0.5 - D, 0.5 - D, 0.5 + D],
    [0.5 + D, 0.5 + D, 0.5 - D],
])


def blobs(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 3, size, size) in [0, 1]: grey noise with one disc coloured by its class, and the labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(len(PALETTE), (n,), generator=g)
    x = 0.5 + 0.08 * torch.randn(n, 3, size, size, generator=g)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(4, size - 4, (n, 2), generator=g)
    radius = torch.randint(3, 5, (n,), generator=g)
    inside = (rows - centre[:, 0, None, None]) ** 2 + (cols - centre[:, 1, None, None]) ** 2 <= radius[:, None, None] ** 2
    colour = PALETTE[y] + 0.03 * torch.randn(n, 3, generator=g)
    disc = colour[:, :, None, None] + 0.03 * torch.randn(n, 3, size, size, generator=g)
    return torch.where(inside[:, None], disc, x).clamp(0, 1), y


class Normalize(nn.Module):
    """fgvc models take [0, 1] images and normalise in their first layer."""

    def forward(self, x):
        return (x - 0.5) / 0.25


def tiny_cnn(classes: int = 4) -> nn.Module:
    return nn.Sequential(
        Normalize(),
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, classes),
    )


def train_blobs(loss=None, steps: int = 200, seed: int = 0) -> nn.Module:
    """Train tiny_cnn on 2048 blobs with Adam; loss(model, x, y) defaults to cross-entropy. Returns it in eval mode."""
    torch.manual_seed(seed)
    model = tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = blobs(2048, seed=1)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(x), (64,), generator=g)
        value = loss(model, x[i], y[i]) if loss else F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        value.backward()
        opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()
