"""Adversarial training as a loss (seed Eq. 1) and the per-epoch robustness probe the training loop reports.

Attack mode during training: the adversarial example is searched for with the
model in eval mode (BatchNorm on its running statistics, dropout off), i.e.
against the model as it is evaluated and attacked at test time; then both loss
terms are computed in the mode the loop has the model in (normally train), and
every module's mode is restored. Wong et al. (2020) search in train mode instead;
on a BatchNorm CNN trained from scratch on generated colour blobs (tests/robust),
eval-mode search gave FGSM accuracy at eps 0.05 of 0.70 vs 0.31 (FGSM training)
and 0.65 vs 0.38 (RS-FGSM), over 3 seeds, with equal clean accuracy. It also
keeps the search's forwards out of the BatchNorm running statistics and makes the
search deterministic given the random start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fgvc.config import AdvConfig
from fgvc.errors import UserError
from fgvc.models.freeze import eval_with_grad
from fgvc.robust.attacks import ATTACKS, LossFn, check_images, fgsm, pgd, resolve_attack


def check_adv_settings(adv) -> None:
    """Refuse ``adv.alpha`` / ``adv.steps`` that ``adv.attack`` would silently ignore (``adv`` a
    fgvc.config.AdvConfig), as ``fgvc attack`` refuses ``--alpha`` for FGSM; UserError names the key.
    The seed's Eq. 1 calls its loss weight alpha: that weight is ``adv.loss_weight`` here."""
    spec = ATTACKS.get(adv.attack)
    if spec is None:  # "none" (or a bad name, which validate() has refused)
        return
    for key, value, unset, takes in (("alpha", adv.alpha, 0.0, spec.takes_alpha),
                                     ("steps", adv.steps, AdvConfig.steps, spec.takes_steps)):
        if value != unset and not takes:
            users = ", ".join(n for n, a in ATTACKS.items() if a.trainable and getattr(a, f"takes_{key}"))
            hint = " (Eq. 1's weight of the clean loss is adv.loss_weight)" if key == "alpha" else ""
            raise UserError(f"adv.{key}={value} does not apply to adv.attack={adv.attack}; drop it{hint}, "
                            f"or use adv.attack={users.replace(', ', ' or ')}")


def adversarial_loss(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, attack: str = "fgsm",
                     eps: float = 8 / 255, alpha: float | None = None, steps: int | None = None,
                     loss_weight: float = 0.5, attack_model: nn.Module | None = None) -> Tensor:
    """Eq. 1: ``w * L(x) + (1 - w) * L(x_adv)`` with ``w = loss_weight`` in [0, 1]; x in [0, 1], eps in pixel units.

    ``attack``: a name of ``fgvc.robust.attacks.ATTACKS`` that adversarial training can use:
    ``fgsm`` (one step of eps from x), ``rs-fgsm`` (Wong et al. 2020: uniform start in the
    eps-ball, one step of ``alpha``) or ``pgd`` (uniform start, ``steps`` of ``alpha``);
    ``alpha``/``steps`` of None or 0 mean the registry's defaults (1.25 eps; 10 steps of
    2.5 eps / steps). ``y`` is whatever ``loss_fn(logits, y)`` takes, soft
    (mixup) targets included; the attack ascends that same loss. Random starts use
    the global RNG, so the training seed fixes them. ``attack_model`` (default: ``model``)
    runs the search: the training loop passes the unwrapped module, since a Fabric/DDP
    wrapper only allows its own backward. The search runs in eval mode
    (see the module docstring); call with grad enabled, then ``.backward()`` the
    result: the search itself never writes parameter ``.grad``.
    """
    spec = resolve_attack(attack, eps, alpha or None, steps or None, key="adv.", training=True)
    w = float(loss_weight)
    if not 0.0 <= w <= 1.0:
        raise UserError(f"adv.loss_weight={loss_weight!r} is outside [0, 1]; it weighs the clean loss in Eq. 1")
    check_images(x)
    if w == 1.0 or spec.eps == 0.0:  # no adversarial term, or it equals the clean one
        return loss_fn(model(x), y)

    def attack_loss(logits: Tensor, target: Tensor) -> Tensor:
        # loss_fn is usually a batch mean; times the batch size each image's input
        # gradient is O(1), so fp16 autocast does not flush it to zero (a zero sign is no step)
        return loss_fn(logits, target) * x.shape[0]

    x = x.detach()
    # the search runs in eval mode (modes restored); random starts use the global RNG
    x_adv = spec.run(model if attack_model is None else attack_model, x, y, loss_fn=attack_loss)
    clean = loss_fn(model(x), y) if w > 0 else None
    adversarial = loss_fn(model(x_adv.detach()), y)
    return adversarial if w == 0 else w * clean + (1 - w) * adversarial


def robust_accuracy_probe(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 10,
                          seed: int = 0) -> dict[str, float]:
    """Accuracy (fractions in [0, 1]) on one batch: clean, under FGSM and under PGD-``steps`` at eps.

    Runs in eval mode (modes restored). PGD's random start is seeded with ``seed`` so
    that epoch-to-epoch changes come from the model, not from the noise.
    """
    y = y.to(x.device)

    def accuracy(images: Tensor) -> float:
        with eval_with_grad(model), torch.no_grad():
            return (model(images).argmax(dim=1) == y).float().mean().item()

    generator = torch.Generator(device=x.device).manual_seed(seed)
    return {
        "clean": accuracy(x),
        "fgsm": accuracy(fgsm(model, x, y, eps)),
        "pgd": accuracy(pgd(model, x, y, eps, steps=steps, generator=generator)),
    }


def catastrophic_overfitting(history: Sequence[Mapping[str, float]], drop: float = 0.5,
                             min_drop: float = 0.1) -> bool:
    """True when PGD accuracy has collapsed while FGSM accuracy has not (Wong et al. 2020, §5).

    ``history`` is the per-epoch list of probe results (``{"fgsm": .., "pgd": ..}``,
    fractions). Rule: take the earlier epoch with the best PGD accuracy; flag when
    the latest PGD accuracy is below ``drop`` times that best *and* at least
    ``min_drop`` lower, while the latest FGSM accuracy is at least what it was at
    that epoch. A model that gets worse at both (plain divergence) is not flagged,
    nor is a small wobble near zero.
    """
    if len(history) < 2:
        return False
    *past, last = history
    best = max(past, key=lambda h: h["pgd"])
    collapsed = last["pgd"] < drop * best["pgd"] and best["pgd"] - last["pgd"] >= min_drop
    return collapsed and last["fgsm"] >= best["fgsm"]
