"""Backbones and what part of them is trained."""

from fgvc.models.factory import Classifier, count_parameters, create_model, model_names
from fgvc.models.freeze import apply_trainable, eval_with_grad, train_mode

__all__ = ["Classifier", "apply_trainable", "count_parameters", "create_model", "eval_with_grad", "model_names",
           "train_mode"]
