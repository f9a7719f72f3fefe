"""Training: the classifier loop, evaluation, batch mixing."""

from fgvc.train.evaluate import evaluate
from fgvc.train.loop import is_main_process, metrics_table, train

__all__ = ["evaluate", "is_main_process", "metrics_table", "train"]
