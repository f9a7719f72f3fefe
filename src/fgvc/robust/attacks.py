"""White-box L-inf attacks on images in [0, 1]: FGSM, I-FGSM (Kurakin's BIM), RS-FGSM and PGD.

``ATTACKS`` is the one registry of attack names: each maps to an ``AttackSpec`` (the
function, its default step size and step count as functions of eps, whether it starts at
a random point of the eps-ball, whether adversarial training can use it).
``resolve_attack(name, eps, alpha, steps)`` checks a name and its settings once and
returns the spec with its defaults filled in; the eps sweep (``fgvc attack``), adversarial
training (``adv.attack``), the CLI's ``--attack`` choices and the config check all read it.

Every attack runs the model in eval mode and restores each submodule's own mode
afterwards, leaves parameter ``.grad`` untouched (the gradient is taken w.r.t. the
input only), works inside ``torch.no_grad()`` / ``torch.inference_mode()``, and
returns a detached ``x_adv`` in [0, 1] with ``|x_adv - x|_inf <= eps``. Budgets
(``eps``, ``alpha``) are in pixel units of the [0, 1] range, e.g. ``8/255``.
Untargeted attacks ascend the cross-entropy of the true label ``y``; targeted ones
(``targeted=True``, ``y`` = target class) descend the cross-entropy of the target.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc.errors import UserError
from fgvc.models.freeze import eval_with_grad

LossFn = Callable[[Tensor, Tensor], Tensor]


def ce_sum(logits: Tensor, y: Tensor) -> Tensor:
    # summed rather than averaged: each image's input gradient then does not shrink
    # with the batch size (only its sign is used, but tiny values can underflow to 0)
    return F.cross_entropy(logits, y, reduction="sum")


def check_eps(eps: float, name: str = "eps") -> float:
    """Return eps as a float, or raise UserError unless it is a finite number in [0, 1]."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise UserError(f"{name}={eps!r} is not a number; give a pixel budget in [0, 1] such as 8/255") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UserError(
            f"{name}={eps!r} is outside [0, 1]; budgets are in pixel units of [0, 1] images, e.g. 0.03 or 8/255"
        )
    return value


def check_images(x: Tensor) -> None:
    """Raise UserError unless x is a floating tensor with values in [0, 1]."""
    if not torch.is_floating_point(x):
        raise UserError(f"attack input has dtype {x.dtype}; pass float images in [0, 1] (e.g. x.float() / 255)")
    if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise UserError(
            f"attack input spans [{x.min().item():.3g}, {x.max().item():.3g}], not [0, 1]; pass un-normalised "
            "images (fgvc models normalise inside their first layer)"
        )


def check_positive(value: float, name: str) -> float:
    """Return value as a float, or raise UserError unless it is a finite number > 0 (a step size)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise UserError(f"{name}={value!r} must be a positive number of pixel units, e.g. 1/255")
    return number


def check_steps(steps: int, name: str = "steps") -> int:
    """Return steps as an int, or raise UserError unless it is a whole number >= 1."""
    try:
        ok = not isinstance(steps, bool) and int(steps) == steps and steps >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{name}={steps!r} must be a whole number >= 1")
    return int(steps)


def input_grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = ce_sum) -> tuple[Tensor, Tensor]:
    """Gradient of loss_fn(model(x), y) w.r.t. x only, and the detached logits of that forward."""
    # clone (not just detach) so an inference tensor becomes usable by autograd
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    loss = loss_fn(logits, y)
    # autograd.grad w.r.t. the input only: parameter .grad is never written and the
    # engine skips the weight-gradient kernels it does not need
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:  # the output does not depend on the input
        grad = torch.zeros_like(x)
    return grad.detach(), logits.detach()


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip x_adv to the L-inf ball of radius eps around x, then to [0, 1] (stays inside the ball)."""
    return torch.clamp(torch.clamp(x_adv, min=x - eps, max=x + eps), 0.0, 1.0)


def direction(grad: Tensor, targeted: bool) -> Tensor:
    """The signed step: up the loss of the true class, or down the loss of the target class."""
    return -grad.sign() if targeted else grad.sign()


def uniform_in_ball(x: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """A uniform random point of the eps-ball around x, clipped to [0, 1]."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.clamp(x + (2 * noise - 1) * eps, 0.0, 1.0)


def iterate(model: nn.Module, x: Tensor, y: Tensor, x_start: Tensor, eps: float, alpha: float,
            steps: int, targeted: bool = False, loss_fn: LossFn = ce_sum) -> Tensor:
    """Signed-gradient steps of size alpha from x_start, projected to the eps-ball and [0, 1] each step."""
    x = x.detach()
    x_adv = x_start.detach()
    for _ in range(steps):
        grad, _ = input_grad(model, x_adv, y, loss_fn)
        x_adv = project(x_adv + alpha * direction(grad, targeted), x, eps)
    return x_adv


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, targeted: bool = False,
         loss_fn: LossFn = ce_sum) -> Tensor:
    """FGSM (Goodfellow et al. 2015): clip(x + eps * sign(grad_x loss), 0, 1).

    ``x``: (B, C, H, W) float images in [0, 1]; ``y``: (B,) int64 labels (the targets with
    ``targeted``); ``eps`` in [0, 1] pixel units (8/255 is 8 grey levels). Returns x_adv of x's shape
    with |x_adv - x|_inf <= eps, the model's train/eval modes restored. UserError for eps outside
    [0, 1] or images outside [0, 1]."""
    eps = check_eps(eps)
    check_images(x)
    with eval_with_grad(model):
        grad, _ = input_grad(model, x, y, loss_fn)
        x = x.detach()
        return torch.clamp(x + eps * direction(grad, targeted), 0.0, 1.0)


def default_ifgsm_steps(eps: float) -> int:
    """Kurakin et al. (2017): min(eps*255 + 4, 1.25 * eps*255) steps, at least 1."""
    return max(1, int(min(255 * eps + 4, 1.25 * 255 * eps)))


def ifgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float | None = None,
          steps: int | None = None, targeted: bool = False, loss_fn: LossFn = ce_sum) -> Tensor:
    """I-FGSM / BIM (Kurakin et al. 2017) from x: alpha and steps default to ``ATTACKS["ifgsm"]``'s
    (1/255 and min(255 eps + 4, 1.25*255 eps)). Shapes, units and errors as ``fgsm``; every step is
    projected back to the eps-ball around x and to [0, 1], so |x_adv - x|_inf <= eps."""
    a = resolve_attack("ifgsm", eps, alpha, steps)
    check_images(x)
    with eval_with_grad(model):
        return iterate(model, x, y, x, a.eps, a.alpha, a.steps, targeted, loss_fn)


def rs_fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float | None = None,
            targeted: bool = False, generator: torch.Generator | None = None, loss_fn: LossFn = ce_sum) -> Tensor:
    """RS-FGSM (Wong et al. 2020): a uniform start in the eps-ball, then one step of alpha (default
    ``ATTACKS["rs-fgsm"]``'s, 1.25 eps) projected back to the ball and [0, 1]. ``generator`` (on x's
    device) makes the start reproducible; without it the global RNG is used."""
    a = resolve_attack("rs-fgsm", eps, alpha, None)
    check_images(x)
    with eval_with_grad(model):
        start = uniform_in_ball(x.detach(), a.eps, generator)
        return iterate(model, x, y, start, a.eps, a.alpha, a.steps, targeted, loss_fn)


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float | None = None, steps: int | None = None,
        random_start: bool = True, targeted: bool = False,
        generator: torch.Generator | None = None, loss_fn: LossFn = ce_sum) -> Tensor:
    """PGD (Madry et al. 2018): uniform start in the eps-ball, then steps of alpha; defaults from
    ``ATTACKS["pgd"]`` (10 steps of 2.5 eps / steps).

    Returns the last iterate, projected to the eps-ball around x and to [0, 1] after every step
    (|x_adv - x|_inf <= eps). Shapes, units and errors as ``fgsm``. ``generator`` (on x's device)
    makes the random start reproducible; without it the global RNG is used.
    """
    a = resolve_attack("pgd", eps, alpha, steps)
    check_images(x)
    with eval_with_grad(model):
        start = uniform_in_ball(x.detach(), a.eps, generator) if random_start else x.detach()
        return iterate(model, x, y, start, a.eps, a.alpha, a.steps, targeted, loss_fn)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the registry; ``resolve_attack`` returns a copy with ``eps``, ``alpha``, ``steps`` set.

    ``fn`` is the attack function (``fn(model, x, y, eps, ...) -> x_adv``); ``default_alpha(eps, steps)``
    and ``default_steps(eps)`` give its step size (pixel units) and step count when not given;
    ``takes_alpha`` / ``takes_steps`` say whether a given value is used (FGSM is one step of eps,
    RS-FGSM one step); ``random_start``: it starts at a uniform point of the eps-ball (it then
    takes a ``generator``); ``trainable``: ``adv.attack`` may name it; ``paper``: the source.
    """

    name: str
    fn: Callable[..., Tensor]
    default_alpha: Callable[[float, int], float]
    default_steps: Callable[[float], int]
    takes_alpha: bool
    takes_steps: bool
    random_start: bool
    trainable: bool
    paper: str
    eps: float | None = None
    alpha: float | None = None
    steps: int | None = None

    def run(self, model: nn.Module, x: Tensor, y: Tensor, targeted: bool = False,
            generator: torch.Generator | None = None, loss_fn: LossFn = ce_sum) -> Tensor:
        """``x_adv`` for a resolved spec (x in [0, 1], (B, C, H, W)); the model runs in eval mode, modes restored."""
        if self.eps is None:
            raise ValueError(f"attack {self.name!r} is not resolved; use resolve_attack(name, eps, alpha, steps)")
        kwargs: dict = {"targeted": targeted, "loss_fn": loss_fn}
        if self.takes_alpha:
            kwargs["alpha"] = self.alpha
        if self.takes_steps:
            kwargs["steps"] = self.steps
        if self.random_start:
            kwargs["generator"] = generator
        return self.fn(model, x, y, self.eps, **kwargs)

    def settings(self) -> dict:
        """``{"alpha", "steps"}`` as resolved (recorded beside sweep results)."""
        return {"alpha": self.alpha, "steps": self.steps}


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec for spec in (
        AttackSpec("fgsm", fgsm, lambda eps, steps: eps, lambda eps: 1, takes_alpha=False, takes_steps=False,
                   random_start=False, trainable=True, paper="Goodfellow et al. 2015"),
        AttackSpec("ifgsm", ifgsm, lambda eps, steps: 1 / 255, default_ifgsm_steps, takes_alpha=True,
                   takes_steps=True, random_start=False, trainable=False, paper="Kurakin et al. 2017"),
        AttackSpec("rs-fgsm", rs_fgsm, lambda eps, steps: 1.25 * eps, lambda eps: 1, takes_alpha=True,
                   takes_steps=False, random_start=True, trainable=True, paper="Wong et al. 2020"),
        AttackSpec("pgd", pgd, lambda eps, steps: 2.5 * eps / steps, lambda eps: 10, takes_alpha=True,
                   takes_steps=True, random_start=True, trainable=True, paper="Madry et al. 2018"),
    )
}


def attack_names(trainable: bool = False) -> list[str]:
    """The registry's attack names (only those adversarial training can use with ``trainable``)."""
    return [name for name, spec in ATTACKS.items() if spec.trainable or not trainable]


def resolve_attack(name: str, eps: float, alpha: float | None = None, steps: int | None = None,
                   key: str = "", training: bool = False) -> AttackSpec:
    """``ATTACKS[name]`` with eps, alpha and steps checked and the defaults filled in (None: the default).

    ``key`` prefixes the setting names in messages (``"adv."`` gives ``adv.eps``); ``training``
    refuses an attack adversarial training cannot use. Raises UserError (one sentence, with the
    closest name for a misspelt one) for an unknown name, eps outside [0, 1], alpha <= 0 or
    steps that are not a whole number >= 1.
    """
    names = attack_names(trainable=training)
    if name in ATTACKS and name not in names:
        raise UserError(f"attack {name!r} is not one adversarial training can use; choose one of {', '.join(names)}")
    if name not in names:
        what = "adversarial training attack" if training else "attack"
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown {what} {name!r}{hint}; choose one of {', '.join(names)}")
    spec = ATTACKS[name]
    eps = check_eps(eps, name=f"{key}eps")
    steps = check_steps(steps, f"{key}steps") if spec.takes_steps and steps is not None else spec.default_steps(eps)
    if spec.takes_alpha and alpha is not None:
        alpha = check_positive(alpha, f"{key}alpha")
    else:
        alpha = spec.default_alpha(eps, steps)
    return dataclasses.replace(spec, eps=eps, alpha=alpha, steps=steps)
