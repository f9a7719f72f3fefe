"""plain: the backbone's own head, global average pooling + dropout + linear (the seed's fine-tune).

``build`` returns the backbone ``Classifier`` unchanged, so a plain run's checkpoint is the one fgvc
always wrote and every earlier run loads as it did. Its training step is one forward pass and
cross-entropy on the soft targets (label smoothing, Mixup, CutMix folded in), its inference the
forward pass itself.
"""

from __future__ import annotations

from torch import nn

from fgvc.methods.base import Method as BaseMethod
from fgvc.models.factory import Classifier


class Method(BaseMethod):
    name_ = "plain"

    @classmethod
    def build(cls, backbone: Classifier, num_classes: int, dropout: float = 0.0) -> Classifier:
        return backbone

    def make_head(self, channels: int, num_classes: int, dropout: float) -> nn.Module:
        # never called (build keeps the backbone's head); written out for the reader: what plain is
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))
