"""Backbones and what part of them is trained."""

from fgvc.models.factory import Classifier, count_parameters, create_model, model_names
from fgvc.models.freeze import apply_trainable, train_mode

__all__ = ["Classifier", "apply_trainable", "count_parameters", "create_model", "model_names", "train_mode"]
