"""Training: the classifier loop, evaluation, batch mixing."""

from fgvc.train.evaluate import evaluate
from fgvc.train.loop import build_model, metrics_table, train

__all__ = ["build_model", "evaluate", "metrics_table", "train"]
