"""CLIP zero-shot classification, linear probes and fine-tuning on fgvc datasets (open_clip models)."""

from fgvc.clip.finetune import ALPHAS, FinetuneResult, finetune_clip, run_finetune, wise_ft, wise_ft_curve
from fgvc.clip.models import ClipClassifier, ClipImageEncoder, cached_weights, clip_transform, load_clip
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
    "ALPHAS", "TEMPLATES", "ClipClassifier", "ClipImageEncoder", "FinetuneResult", "cached_weights",
    "clean_class_name", "clip_transform", "encode_images", "evaluate", "finetune_clip", "fit_linear_probe",
    "load_clip", "load_descriptions", "load_templates", "resolve_templates", "run_finetune", "run_linear_probe",
    "run_zeroshot", "wise_ft", "wise_ft_curve", "zeroshot_weights",
]
