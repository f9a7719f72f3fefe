"""Robustness: white-box attacks on [0, 1] images (the ``ATTACKS`` registry), eps sweeps and adversarial training.

    x_adv = fgvc.robust.fgsm(model, x, y, eps=8 / 255)
    result = fgvc.robust.evaluate_attack(model, loader, "pgd", parse_eps("standard"))
"""

from fgvc.robust.attacks import ATTACKS, AttackSpec, fgsm, ifgsm, pgd, resolve_attack, rs_fgsm
from fgvc.robust.sweep import EPS_LISTS, SEED_EPS, STANDARD_EPS, evaluate_attack, fgsm_sweep, parse_eps

__all__ = [
    "ATTACKS",
    "AttackSpec",
    "EPS_LISTS",
    "SEED_EPS",
    "STANDARD_EPS",
    "evaluate_attack",
    "fgsm",
    "fgsm_sweep",
    "ifgsm",
    "parse_eps",
    "pgd",
    "resolve_attack",
    "rs_fgsm",
]
