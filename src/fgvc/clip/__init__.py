"""CLIP zero-shot classification and linear probes on fgvc datasets (open_clip models).

Fine-tuning (``fgvc.clip.finetune``) drives the training loop and the evaluator, so it sits above them
and is imported from its own module, not from this package's face (docs/architecture.md)."""

from fgvc.clip.classifier import ClipNet, clip_classifier, zeroshot_classifier
from fgvc.clip.models import ClipImageEncoder, cached_weights, clip_transform, load_clip
from fgvc.clip.probe import fit_linear_probe, run_linear_probe
from fgvc.clip.prompts import (
    TEMPLATES,
    clean_class_name,
    load_descriptions,
    load_templates,
    resolve_templates,
)
from fgvc.clip.zeroshot import encode_images, evaluate, run_zeroshot, zeroshot_weights

__all__ = [
    "TEMPLATES", "ClipImageEncoder", "ClipNet", "cached_weights", "clean_class_name", "clip_classifier",
    "clip_transform", "encode_images", "evaluate", "fit_linear_probe", "load_clip",
    "load_descriptions", "load_templates", "resolve_templates", "run_linear_probe", "run_zeroshot",
    "zeroshot_classifier", "zeroshot_weights",
]
