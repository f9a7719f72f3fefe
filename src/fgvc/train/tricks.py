"""The training tricks (seed Table 4 and §3.9) in one registry: what each ``aug.*`` / ``adv.*``
setting changes in a training step.

A trick acts in one of three places:

- ``input``: the per-image train pipeline run in the loader workers (``fgvc.data.transforms``):
  geometric (random-resized-crop, flip, rotation), random crop (resize to data.image_size /
  data.crop_ratio, random crop, flip: the FGVC papers' 448-px recipe), Cutout;
- ``batch``: ``(x, y) -> (x, y_soft)`` before the forward: Mixup, CutMix (timm) and label
  smoothing, all as soft targets;
- ``loss``: how a batch's loss is computed: adversarial training (seed Eq. 1), and the terms the
  criterion adds to every scored forward: center loss, pairwise confusion (``fgvc.train.losses``).

Adding a trick touches the config (a key) and this file (an entry in ``TRICKS`` and the place it
acts: ``train_inputs`` or ``Tricks``). The loop calls ``train_inputs(cfg)`` for the train split's
pipeline, then ``Tricks.targets(x, y)`` per batch, ``Tricks.loss(...)`` per step and
``Tricks.probe(...)`` per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fgvc import config as config_mod
from fgvc.data.transforms import Pipeline, train_transform
from fgvc.methods import train_loss
from fgvc.robust.training import adversarial_loss, catastrophic_overfitting, robust_accuracy_probe
from fgvc.train.losses import Criterion
from fgvc.train.mixing import build_mixing, soft_cross_entropy, soft_targets


@dataclass(frozen=True)
class Trick:
    keys: tuple[str, ...]  # the config keys it reads
    where: str  # input | batch | loss
    on: Callable[[config_mod.Config], bool]  # whether a config turns it on


TRICKS: dict[str, Trick] = {
    "geometric": Trick(("aug.geometric", "aug.rotation"), "input", lambda c: c.aug.geometric),
    "random_crop": Trick(("aug.random_crop",), "input", lambda c: c.aug.random_crop),
    "cutout": Trick(("aug.cutout", "aug.cutout_size"), "input", lambda c: c.aug.cutout > 0),
    "mixup": Trick(("aug.mixup_alpha",), "batch", lambda c: c.aug.mixup_alpha > 0),
    "cutmix": Trick(("aug.cutmix_alpha",), "batch", lambda c: c.aug.cutmix_alpha > 0),
    "label_smoothing": Trick(("aug.label_smoothing",), "batch", lambda c: c.aug.label_smoothing > 0),
    "adversarial": Trick(("adv.attack", "adv.eps", "adv.alpha", "adv.steps", "adv.loss_weight"), "loss",
                         lambda c: c.adv.attack != "none"),
    "center_loss": Trick(("loss.center", "loss.center_alpha"), "loss", lambda c: c.loss.center > 0),
    "pairwise_confusion": Trick(("loss.pairwise_confusion",), "loss", lambda c: c.loss.pairwise_confusion > 0),
}


def active(cfg: config_mod.Config) -> list[str]:
    """Names of the tricks ``cfg`` turns on, in registry order."""
    return [name for name, trick in TRICKS.items() if trick.on(cfg)]


@dataclass
class Tricks:
    """The tricks of one run, built once from its config (``build_tricks``)."""

    mixing: Callable | None  # timm Mixup/CutMix (label smoothing folded in), or None
    label_smoothing: float
    num_classes: int
    adv: config_mod.AdvConfig | None  # adversarial training settings, or None
    # data.augment_on=device: (uint8 batch, epoch, step) -> float batch in [0, 1], the input tricks run
    # batched on the accelerator (fgvc.train.device_aug); None when they run per image on the host
    on_device: Callable | None = None
    # (logits, soft targets) -> loss of each scored forward: soft cross-entropy plus loss.* terms
    criterion: Callable = soft_cross_entropy

    def inputs(self, x: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """The batch the model sees: ``x`` itself, or its device augmentation (seeded by epoch and step)."""
        return x if self.on_device is None else self.on_device(x, epoch, step)

    @property
    def even_batches(self) -> bool:
        """timm's Mixup pairs each image with its mirror in the batch: batches must be even."""
        return self.mixing is not None

    @property
    def probe_fields(self) -> list[str]:
        """Extra history.csv columns: the per-epoch robustness probe under adversarial training."""
        return [f"probe_{k}" for k in ("clean", "fgsm", "pgd")] if self.adv is not None else []

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) -> (x, soft targets (B, C) whose rows sum to 1)."""
        if self.mixing is not None:
            return self.mixing(x, y)  # label smoothing is folded into the soft targets
        return x, soft_targets(y, self.num_classes, self.label_smoothing)

    def loss(self, model, raw_model, x: torch.Tensor, target: torch.Tensor, autocast,
             step=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits of the train-mode forward) for one batch. ``model`` is what the optimizer's
        backward runs through (the Fabric/DDP wrapper), ``raw_model`` the module itself; ``step(loss)`` one
        optimizer step, for a method that takes steps of its own in the batch (PMG)."""
        if self.adv is None:  # the method's training step (method.name; plain: one forward pass)
            return train_loss(raw_model, model, x, target, self.criterion, autocast, step)
        # Eq. 1 of the seed: w * L(x) + (1 - w) * L(x_adv), the attack run on the current model.
        # Train accuracy is read from the first train-mode forward: the clean one (the adversarial
        # one when w = 0); the attack's own search runs in eval mode.
        train_logits = []

        def loss_fn(out, tgt):
            if raw_model.training:
                train_logits.append(out.detach())
            return self.criterion(out, tgt)

        a = self.adv
        with autocast():
            loss = adversarial_loss(model, x, target, loss_fn, a.attack, a.eps, a.alpha or None, a.steps,
                                    a.loss_weight, attack_model=raw_model)
        return loss, train_logits[0]

    def probe(self, raw_model, val_loader, autocast, earlier: list[dict]) -> tuple[dict, str] | None:
        """Under adversarial training: clean / FGSM / PGD accuracy on one validation batch, which makes
        catastrophic overfitting visible (``earlier``: the probes of the epochs before), and a warning
        when it has happened ('' otherwise). None without adversarial training."""
        if self.adv is None:
            return None
        xb, yb = next(iter(val_loader))[:2]
        with autocast():
            probe = robust_accuracy_probe(raw_model, xb, yb, self.adv.eps)
        warning = ""
        if catastrophic_overfitting([*earlier, probe]):
            warning = (f"warning: PGD accuracy collapsed to {probe['pgd']:.3f} while FGSM accuracy rose to "
                       f"{probe['fgsm']:.3f}: catastrophic overfitting; try adv.attack=rs-fgsm or pgd, "
                       "or a smaller adv.eps")
        return probe, warning


def train_inputs(cfg: config_mod.Config) -> Pipeline:
    """The per-image train pipeline (PIL image -> float (3, S, S) in [0, 1], S = data.image_size) with
    the input tricks ``cfg`` turns on: geometric (random-resized-crop, flip, rotation) or random crop
    (resize to S / data.crop_ratio, random S crop, flip), Cutout; with data.augment_on=device the fixed
    uint8 square of ``fgvc.train.device_aug.host_transform``."""
    a, d = cfg.aug, cfg.data
    if d.augment_on == "device":  # the host only resizes; Tricks.inputs augments on the device
        from fgvc.train.device_aug import host_transform

        return host_transform(d.image_size, a.geometric, a.random_crop, d.crop_ratio)
    return train_transform(d.image_size, a.geometric, a.rotation, a.cutout, a.cutout_size, a.random_crop,
                           d.crop_ratio)


def build_tricks(cfg: config_mod.Config, num_classes: int, rank: int = 0, reduce: Callable | None = None) -> Tricks:
    """The batch and loss tricks ``cfg``'s aug.*, adv.* and loss.* keys ask for (``rank``: this process's, which
    seeds device augmentation apart from the other processes'; ``reduce``: a sum over processes, which keeps
    the center loss's centres one set under DDP)."""
    a = cfg.aug
    on_device = None
    if cfg.data.augment_on == "device":
        from fgvc.train.device_aug import build_device_augment

        on_device = build_device_augment(a, cfg.data.image_size, cfg.train.seed, rank, cfg.data.crop_ratio)
    return Tricks(
        mixing=build_mixing(a.mixup_alpha, a.cutmix_alpha, a.label_smoothing, num_classes),
        label_smoothing=a.label_smoothing,
        num_classes=num_classes,
        adv=cfg.adv if cfg.adv.attack != "none" else None,
        on_device=on_device,
        criterion=Criterion(soft_cross_entropy, cfg.loss.pairwise_confusion, cfg.loss.center, cfg.loss.center_alpha,
                            num_classes, reduce),
    )
