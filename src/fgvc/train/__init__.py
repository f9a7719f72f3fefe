"""Training: the classifier loop, evaluation, batch mixing."""

from fgvc.train.evaluate import evaluate
from fgvc.train.loop import build_model, is_main_process, metrics_table, train

__all__ = ["build_model", "evaluate", "is_main_process", "metrics_table", "train"]
