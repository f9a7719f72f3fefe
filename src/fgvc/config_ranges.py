"""The range checks of the config's own keys: dotted key -> (predicate, what is expected).

``fgvc.config.validate`` runs them after every load (through ``fgvc.config.check_ranges``); keys other
layers own are checked by their preflight (``fgvc.train.checks``). Standard library only, so that the
table sits on the ground floor beside ``fgvc.config``.
"""

from __future__ import annotations

import re
import typing
from typing import Any

# data.classes as a list: 0-based indices and inclusive ranges, comma-separated (fgvc.data.subset)
CLASS_LIST = re.compile(r"\s*\d+\s*(-\s*\d+\s*)?(,\s*\d+\s*(-\s*\d+\s*)?)*")

# Range checks: key -> (predicate, what is expected, or a function giving it). Checked after every load.
CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str | typing.Callable[[], str]]] = {
    "data.image_size": (lambda v: 8 <= v <= 4096, "an integer between 8 and 4096"),
    "data.crop_ratio": (lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]: the crop side over the resized shorter "
                        "side, 0.875 by default (224 of 256, 448 of 512)"),
    "data.val_fraction": (lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)"),
    "data.num_workers": (lambda v: v >= -1, "0 or more, or -1 for auto"),
    "data.train_source": (lambda v: v in ("real", "real+generated", "generated"),
                          "one of real, real+generated, generated"),
    "data.generated_ratio": (lambda v: v >= 0, "0 or more generated images per real one"),
    "data.classes": (lambda v: v.strip() in ("", "first-half", "second-half") or bool(CLASS_LIST.fullmatch(v)),
                     "empty (all), first-half, second-half, or 0-based indices and ranges such as 0-24 or 0,3,7-9"),
    "data.cache": (lambda v: v in ("off", "auto", "on"), "one of off, auto, on"),
    "data.cache_budget_gb": (lambda v: v >= 0, "0 or more GiB"),
    "data.augment_on": (lambda v: v in ("host", "device"), "one of host, device"),
    "data.sampler": (lambda v: v in ("random", "pk"), "one of random, pk"),
    "data.pk_classes": (lambda v: v >= 0, "0 (train.batch_size // data.pk_images) or more classes per batch"),
    "data.pk_images": (lambda v: v >= 1, "1 or more images per class"),
    "model.dropout": (lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)"),
    "model.batchnorm": (lambda v: v in ("auto", "train", "frozen", "reestimate"),
                        "one of auto, train, frozen, reestimate"),
    "model.output_stride": (lambda v: v in (8, 16, 32), "8, 16 or 32 (the last feature map's stride; 32 is the "
                            "backbone's own, 16 the stride-16 map of iSQRT-COV's and CAL's authors)"),
    "train.epochs": (lambda v: v >= 1, "1 or more"),
    "train.batch_size": (lambda v: v >= 1, "1 or more"),
    "train.lr": (lambda v: v > 0, "a positive number"),
    "train.weight_decay": (lambda v: v >= 0, "0 or more"),
    "train.head_lr_scale": (lambda v: v > 0, "a positive factor: the head's rate over train.lr (1: the same rate)"),
    "train.gamma": (lambda v: 0 < v <= 1, "a factor in (0, 1]"),
    "train.schedule": (lambda v: v in ("multistep", "cosine"), "one of multistep, cosine"),
    "train.warmup": (lambda v: 0 <= v < 1, "a fraction of the steps in [0, 1)"),
    "train.patience": (lambda v: v >= 0, "0 (off) or more"),
    "train.devices": (lambda v: v >= 1, "1 or more"),
    "train.precision": (
        lambda v: v in ("auto", "32-true", "bf16-mixed", "16-mixed", "32", "bf16", "16"),
        "one of auto, 32-true, bf16-mixed, 16-mixed",
    ),
    "train.accelerator": (lambda v: v in ("auto", "cpu", "cuda", "gpu", "mps"), "one of auto, cpu, cuda"),
    "train.channels_last": (lambda v: v in ("auto", "true", "false"), "one of auto, true, false"),
    "train.threads": (lambda v: v in ("auto", "fixed"), "auto or fixed"),
    "aug.cutout": (lambda v: v >= 0, "0 (off) or more holes"),
    "aug.cutout_size": (lambda v: 0 < v <= 1, "a fraction of the image side in (0, 1]"),
    "aug.mixup_alpha": (lambda v: v >= 0, "0 (off) or a positive alpha"),
    "aug.cutmix_alpha": (lambda v: v >= 0, "0 (off) or a positive alpha"),
    "aug.label_smoothing": (lambda v: 0 <= v < 1, "a value in [0, 1)"),
    "adv.eps": (lambda v: 0 <= v <= 1, "a pixel budget in [0, 1]"),
    "adv.alpha": (lambda v: 0 <= v <= 1, "a step size in [0, 1] (0 = default)"),
    "adv.steps": (lambda v: v >= 1, "1 or more"),
    "adv.loss_weight": (lambda v: 0 <= v <= 1, "a weight in [0, 1]"),
    "method.bilinear_dim": (lambda v: v >= 0, "0 (no reduction) or a number of channels"),
    "method.isqrt_dim": (lambda v: v >= 0, "0 (no reduction) or a number of channels"),
    "method.isqrt_iterations": (lambda v: 1 <= v <= 20, "an integer between 1 and 20"),
    "method.attention_maps": (lambda v: v >= 1, "1 or more"),
    "method.crop_threshold": (lambda v: len(v) == 2 and 0 <= v[0] <= v[1] <= 1, "a range [low, high] in [0, 1]"),
    "method.drop_threshold": (lambda v: len(v) == 2 and 0 <= v[0] <= v[1] <= 1, "a range [low, high] in [0, 1]"),
    "method.crop_padding": (lambda v: 0 <= v < 0.5, "a fraction of the side in [0, 0.5)"),
    "method.test_crop_threshold": (lambda v: 0 <= v <= 1, "a fraction of the map's maximum in [0, 1]"),
    "method.test_crop_padding": (lambda v: 0 <= v < 0.5, "a fraction of the side in [0, 0.5)"),
    "method.center_weight": (lambda v: v >= 0, "0 or more"),
    "method.center_momentum": (lambda v: 0 <= v <= 1, "a rate in [0, 1]"),
    "method.effect_weight": (lambda v: v >= 0, "0 or more"),
    "method.pmg_width": (lambda v: v >= 1, "1 or more channels"),
    "method.api_hidden": (lambda v: v >= 1, "1 or more units"),
    "method.api_margin": (lambda v: 0 <= v <= 1, "a margin between probabilities in [0, 1]"),
    "loss.center": (lambda v: v >= 0, "0 (off) or a positive weight"),
    "loss.center_alpha": (lambda v: 0 < v <= 1, "an update rate in (0, 1]"),
    "loss.pairwise_confusion": (lambda v: v >= 0, "0 (off) or a positive weight"),
    "clip.wise_ft_alphas": (lambda v: all(0 <= a <= 1 for a in v), "a list of mixing weights in [0, 1]"),
}
