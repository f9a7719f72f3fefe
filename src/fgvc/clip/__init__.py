"""CLIP zero-shot classification, linear probes and fine-tuning on fgvc datasets (open_clip models)."""

from fgvc.clip.classifier import ClipNet, clip_classifier, zeroshot_classifier
from fgvc.clip.finetune import ALPHAS, finetune_config, run_finetune, score_wise_ft, wise_ft
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
    "ALPHAS", "TEMPLATES", "ClipImageEncoder", "ClipNet", "cached_weights", "clean_class_name", "clip_classifier",
    "clip_transform", "encode_images", "evaluate", "finetune_config", "fit_linear_probe", "load_clip",
    "load_descriptions", "load_templates", "resolve_templates", "run_finetune", "run_linear_probe", "run_zeroshot",
    "score_wise_ft", "wise_ft", "zeroshot_classifier", "zeroshot_weights",
]
