"""CLIP as an fgvc classifier: ``model.name=clip:<open_clip name>`` trains through the classifier loop.

The network is CLIP's image tower, its unit-norm embedding, then dropout and a linear head, inside
the usual ``Classifier`` (normalisation with the tower's own mean/std first, images in [0, 1]). A
pretrained model starts from its zero-shot head: the class prompts' text embeddings times CLIP's
logit scale, so epoch 0 is the zero-shot classifier and fine-tuning moves away from it (Wortsman
et al. 2022, WiSE-FT; Radford et al. 2021 for the prompts). The text tower is used once, for the
head, and not kept. Checkpoints hold the whole image tower; eval, attack, explain, serve and
export read a CLIP run like any other.
"""

from __future__ import annotations

import logging

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from fgvc import config as config_mod
from fgvc.clip import models as clip_models
from fgvc.clip.models import check_hf_text, check_model_name, preprocess_cfg
from fgvc.clip.models import image_size as tower_size
from fgvc.clip.prompts import load_descriptions, match_descriptions, prompt_names, resolve_templates
from fgvc.clip.zeroshot import zeroshot_weights
from fgvc.errors import UserError
from fgvc.models.factory import CLIP_PREFIX, Classifier
from fgvc.models.hub import hf_offline


class ClipNet(nn.Module):
    """Normalised images (B, 3, S, S) -> logits (B, C): ``head(normalize(visual(x)))``, the head a
    ``Sequential(Dropout, Linear(D, C))`` whose weight rows are (scaled) class embeddings."""

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.visual = visual
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.visual.parameters()).dtype  # a half-precision tower needs inputs of its own dtype
        return self.head(F.normalize(self.visual(x.to(dtype)).float(), dim=-1))

    # model.trainable=head+blocks:N (fgvc.models.freeze) finds a ViT tower's blocks and final norm here
    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    @property
    def norm(self) -> nn.Module:
        return self.visual.ln_post


def open_clip_name(name: str) -> str:
    """``clip:ViT-B/32`` -> ``ViT-B-32`` (papers write the slash; open_clip does not)."""
    rest = name[len(CLIP_PREFIX):] if name.startswith(CLIP_PREFIX) else name
    return rest if rest.startswith(("hf-hub:", "local-dir:")) else rest.replace("/", "-")


def _quick_gelu(model_name: str, tag: str) -> bool:
    """Whether weights of pretrained ``tag`` need QuickGELU (OpenAI's) that the architecture's name does not say."""
    if not tag or model_name.startswith(("hf-hub:", "local-dir:")) or model_name.endswith("-quickgelu"):
        return False
    return bool((open_clip.get_pretrained_cfg(model_name, tag) or {}).get("quick_gelu"))


def _wrap(clip_model, name: str, num_classes: int, dropout: float, image_size: int) -> Classifier:
    size = tower_size(clip_model)
    if image_size != size:
        raise UserError(f"{name} takes {size}x{size} images (its position embeddings are made for them); "
                        f"set data.image_size={size}")
    cfg = preprocess_cfg(clip_model)
    net = ClipNet(clip_model.visual, clip_model.visual.output_dim, num_classes, dropout)
    family = "vit" if isinstance(clip_model.visual, open_clip.transformer.VisionTransformer) else "clip"
    return Classifier(net, name, family, "head.1", None, cfg.get("mean", open_clip.OPENAI_DATASET_MEAN),
                      cfg.get("std", open_clip.OPENAI_DATASET_STD))


def clip_classifier(name: str, num_classes: int, dropout: float = 0.0, image_size: int = 224,
                    pretrained: str = "") -> Classifier:
    """The architecture of ``name`` (``clip:<open_clip name>``) with random weights and a random
    ``num_classes`` head, for loading a checkpoint; ``pretrained`` (the run's clip.pretrained) only
    chooses QuickGELU where those weights were trained with it. UserError for an unknown name."""
    model_name = open_clip_name(name)
    kwargs = {}
    if not model_name.startswith(("hf-hub:", "local-dir:")):
        check_model_name(model_name)
        kwargs["force_quick_gelu"] = _quick_gelu(model_name, pretrained)
    if not model_name.startswith("hf-hub:"):  # open_clip builds the text tower too (RoBERTa's from transformers)
        check_hf_text(model_name, download=not hf_offline(), tokenizer=False)
    root = logging.getLogger()
    root.addFilter(_random_init_note)  # open_clip warns that no weights were loaded: the checkpoint follows
    try:
        clip_model = open_clip.create_model(model_name, pretrained=None, **kwargs)
    finally:
        root.removeFilter(_random_init_note)
    return _wrap(clip_model, name, num_classes, dropout, image_size)


def _random_init_note(record: logging.LogRecord) -> bool:
    return "No pretrained weights loaded" not in record.getMessage()


def zeroshot_classifier(cfg: config_mod.Config, class_names: list[str]) -> Classifier:
    """CLIP ``cfg.model.name`` with ``cfg.clip.pretrained`` weights and its zero-shot head for ``class_names``
    (prompts from ``clip.templates`` and ``clip.descriptions``, class names cleaned for ``data.name``).
    UserError for a missing weights file or cache entry (offline), a wrong image size, a bad template."""
    c = cfg.clip
    templates = resolve_templates(c.templates)
    descriptions = None
    if c.descriptions:
        descriptions = match_descriptions(load_descriptions(c.descriptions), class_names, cfg.data.name)
    clip_model, _, tokenizer = clip_models.load_clip(open_clip_name(cfg.model.name), c.pretrained or None,
                                         cache_dir=c.cache_dir or None, download=not c.offline)
    with torch.no_grad():
        head = zeroshot_weights(clip_model, tokenizer, prompt_names(class_names, cfg.data.name), templates,
                                descriptions) * clip_model.logit_scale.exp()
    model = _wrap(clip_model, cfg.model.name, len(class_names), cfg.model.dropout, cfg.data.image_size)
    with torch.no_grad():
        model.head.weight.copy_(head)
        model.head.bias.zero_()
    return model


__all__ = ["ClipNet", "clip_classifier", "open_clip_name", "zeroshot_classifier"]
