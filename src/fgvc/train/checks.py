"""The training loop's preflight: the checks of a config that need another layer's vocabulary (attack
names from ``fgvc.robust.attacks``, logger names from ``fgvc.train.loggers``) or several keys at once.

``fgvc.config`` checks each key's type and range on every load and knows no other layer; these checks
run where the names are owned, before anything is written: ``train()`` calls ``check_training`` first,
``fgvc study`` calls ``check_names`` on every row before the first one runs. The sentences are the
config's own (``config key 'adv.attack' must be one of ...``), with the closest logger name for a
misspelt one.
"""

from __future__ import annotations

from fgvc import config as config_mod
from fgvc.errors import UserError
from fgvc.methods import METHODS, method_class
from fgvc.methods import check_training as check_method
from fgvc.robust.attacks import attack_names
from fgvc.robust.training import check_adv_settings
from fgvc.train.loggers import parse_loggers, require_installed


def train_attacks() -> list[str]:
    """``none`` and the attacks adversarial training can use (``adv.attack``)."""
    return ["none", *attack_names(trainable=True)]


def check_names(cfg: config_mod.Config) -> None:
    """UserError (one sentence) when ``adv.attack`` is no attack adversarial training can use or
    ``train.loggers`` names an unknown logger (with the closest name)."""
    config_mod.check_ranges(cfg, {"adv.attack": (lambda v: v in train_attacks(),
                                                 lambda: "one of " + ", ".join(train_attacks()))})
    if cfg.train.loggers:
        parse_loggers(cfg.train.loggers)


def check_training(cfg: config_mod.Config) -> None:
    """Every check of a training config beyond its own keys' types and ranges (``fgvc.config``): the
    names above and the settings that only mean something together. ``train()`` runs it before anything
    is read or written."""
    check_names(cfg)
    check_method(cfg)  # method.name and its settings, and the tricks and devices it cannot take
    check_method_in_loop(cfg)
    if cfg.train.loggers:  # for training only: a finished run's config.yaml loads without mlflow
        require_installed(cfg.train.loggers)
    if cfg.adv.attack != "none":
        check_adv_settings(cfg.adv)
    if cfg.train.warmup > 0 and cfg.train.schedule != "cosine":
        raise UserError(f"train.warmup={cfg.train.warmup} warms up the cosine schedule only; set "
                        "train.schedule=cosine or train.warmup=0")
    get = config_mod.get
    mixing = [k for k in ("aug.mixup_alpha", "aug.cutmix_alpha") if get(cfg, k) > 0]
    if mixing and cfg.train.batch_size % 2:
        # timm's Mixup/CutMix pairs each image with its mirror in the batch, so batches must be even
        even = cfg.train.batch_size + 1
        raise UserError(f"{mixing[0]}={get(cfg, mixing[0])} needs an even train.batch_size (Mixup and CutMix pair "
                        f"the images of a batch), got train.batch_size={cfg.train.batch_size}; set "
                        f"train.batch_size={even} or {mixing[0]}=0")


def check_method_in_loop(cfg: config_mod.Config) -> None:
    """UserError (one sentence) when ``method.name`` cannot take a loop setting: ``train.compile`` for a method
    whose training passes bypass ``forward`` (``Method.takes_compile``); ``loss.center`` or
    ``loss.pairwise_confusion`` for a method whose step is not one scored pass per image
    (``Method.takes_feature_losses``: the criterion would add them to other features or logits than they are
    defined on)."""
    name = cfg.method.name
    cls = method_class(name)
    if cfg.train.compile and not cls.takes_compile:
        raise UserError(f"method.name={name} cannot train with train.compile=true (its training passes call the "
                        "backbone and head directly, not the compiled forward, so only evaluation would be "
                        "compiled); set train.compile=false")
    set_losses = [(k, v) for k, v in (("loss.center", cfg.loss.center),
                                      ("loss.pairwise_confusion", cfg.loss.pairwise_confusion)) if v > 0]
    if set_losses and not cls.takes_feature_losses:
        key, value = set_losses[0]
        takers = [n for n, c in METHODS.items() if c.takes_feature_losses]
        own = key == "loss.center" and cls.own_center_loss
        instead = (f" and use its own centre loss, {cls.own_center_loss}" if own
                   else f", or use method.name={', '.join(takers[:-1])} or {takers[-1]}")
        raise UserError(f"method.name={name} cannot train with {key}={value}: its training step scores {cls.scores}, "
                        f"not the one forward pass per image the loss is defined on; set {key}=0{instead}")


__all__ = ["check_method_in_loop", "check_names", "check_training", "train_attacks"]
