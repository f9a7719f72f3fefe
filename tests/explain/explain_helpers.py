"""Helpers for the explain tests: a tiny GAP + linear CNN and a coloured-squares dataset with exact boxes, for the explain tests.

The class of an image is the colour of one square placed at random on grey noise, so
the only evidence is inside the box: a model that learned the task must look there.
"""

from __future__ import annotations

import torch
from torch import nn

from fgvc.models.factory import Classifier

COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.2, 1.0], [0.95, 0.9, 0.1]])


def make_squares(n: int, size: int = 64, seed: int = 0):
    """``(images (n, 3, size, size) in [0, 1], labels (n,), boxes (n, 4) XYXY px)``; class = square colour."""
    g = torch.Generator().manual_seed(seed)
    x = (0.8 * torch.rand(n, 1, size, size, generator=g)).expand(n, 3, size, size).clone()
    y = torch.arange(n) % len(COLOURS)
    boxes = torch.zeros(n, 4)
    for i in range(n):
        s = int(torch.randint(size // 5, size // 3 + 1, (1,), generator=g))
        x0 = int(torch.randint(0, size - s + 1, (1,), generator=g))
        y0 = int(torch.randint(0, size - s + 1, (1,), generator=g))
        shade = 0.8 + 0.2 * torch.rand(1, s, s, generator=g)
        x[i, :, y0:y0 + s, x0:x0 + s] = COLOURS[y[i]][:, None, None] * shade
        boxes[i] = torch.tensor([x0, y0, x0 + s, y0 + s], dtype=torch.float32)
    return x, y, boxes


class TinyNet(nn.Module):
    """Three convs (stride 4 in all: a 16x16 map at 64 px), global average pooling, one linear layer."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_classifier(num_classes: int = 4, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(TinyNet(num_classes), "tiny_cnn", "resnet", "fc", "features", mean=(0.5,) * 3, std=(0.25,) * 3)


def fit(model: nn.Module, x, y, epochs: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
