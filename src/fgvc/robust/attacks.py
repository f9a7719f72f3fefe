"""White-box L-inf attacks on images in [0, 1]: FGSM, I-FGSM (Kurakin's BIM) and PGD.

Every attack runs the model in eval mode and restores each submodule's own mode
afterwards, leaves parameter ``.grad`` untouched (the gradient is taken w.r.t. the
input only), works inside ``torch.no_grad()`` / ``torch.inference_mode()``, and
returns a detached ``x_adv`` in [0, 1] with ``|x_adv - x|_inf <= eps``. Budgets
(``eps``, ``alpha``) are in pixel units of the [0, 1] range, e.g. ``8/255``.
Untargeted attacks ascend the cross-entropy of the true label ``y``; targeted ones
(``targeted=True``, ``y`` = target class) descend the cross-entropy of the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc.errors import UserError

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


@contextmanager
def module_modes(model: nn.Module, training: bool | None) -> Iterator[None]:
    """Put model in train/eval mode (None: leave it) and restore every submodule's own mode on exit.

    Submodules are restored one by one, not with ``model.train(mode)``, because a
    model may deliberately mix modes (a frozen backbone's BatchNorm kept in eval).
    """
    modes = [(m, m.training) for m in model.modules()]
    if training is not None:
        model.train(training)
    try:
        yield
    finally:
        for m, was_training in modes:
            m.training = was_training


@contextmanager
def grad_enabled() -> Iterator[None]:
    """Enable autograd even when the caller is inside no_grad() or inference_mode()."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


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


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, targeted: bool = False) -> Tensor:
    """FGSM (Goodfellow et al. 2015): clip(x + eps * sign(grad_x CE), 0, 1); x in [0, 1], eps in pixel units."""
    eps = check_eps(eps)
    check_images(x)
    with module_modes(model, training=False), grad_enabled():
        grad, _ = input_grad(model, x, y)
        x = x.detach()
        return torch.clamp(x + eps * direction(grad, targeted), 0.0, 1.0)


def default_ifgsm_steps(eps: float) -> int:
    """Kurakin et al. (2017): min(eps*255 + 4, 1.25 * eps*255) steps, at least 1."""
    return max(1, int(min(255 * eps + 4, 1.25 * 255 * eps)))


def ifgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float | None = None,
          steps: int | None = None, targeted: bool = False) -> Tensor:
    """I-FGSM / BIM (Kurakin et al. 2017) from x: alpha default 1/255, steps default min(255 eps + 4, 1.25*255 eps)."""
    eps = check_eps(eps)
    check_images(x)
    alpha = 1 / 255 if alpha is None else check_positive(alpha, "alpha")
    steps = default_ifgsm_steps(eps) if steps is None else check_steps(steps)
    with module_modes(model, training=False), grad_enabled():
        return iterate(model, x, y, x, eps, alpha, steps, targeted)


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float | None = None, steps: int = 10,
        random_start: bool = True, targeted: bool = False,
        generator: torch.Generator | None = None) -> Tensor:
    """PGD (Madry et al. 2018): uniform start in the eps-ball, then steps of alpha (default 2.5 eps / steps).

    Returns the last iterate. ``generator`` (on x's device) makes the random start
    reproducible; without it the global RNG is used.
    """
    eps = check_eps(eps)
    check_images(x)
    steps = check_steps(steps)
    alpha = 2.5 * eps / steps if alpha is None else check_positive(alpha, "alpha")
    with module_modes(model, training=False), grad_enabled():
        start = uniform_in_ball(x.detach(), eps, generator) if random_start else x.detach()
        return iterate(model, x, y, start, eps, alpha, steps, targeted)

