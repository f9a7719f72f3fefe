"""Accuracy under attack across a list of budgets (eps), as in the seed's Figures 9 and 11.

For FGSM the input gradient does not depend on eps, so a sweep takes it once per
batch and reuses it for every eps: k forwards + 1 backward instead of k backwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from fgvc.devices import autocast
from fgvc.errors import UserError
from fgvc.models.freeze import eval_with_grad
from fgvc.robust.attacks import check_eps, check_images, direction, input_grad, resolve_attack

SEED_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)  # the seed's §3.9 list
STANDARD_EPS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)  # the usual ImageNet-scale budgets, plus clean
EPS_LISTS = {"seed": SEED_EPS, "standard": STANDARD_EPS}


def parse_eps(text: str) -> list[float]:
    """Parse "0,0.05,8/255" (numbers or fractions) or a list name (seed, standard) into eps values in [0, 1]."""
    text = str(text).strip()
    if text in EPS_LISTS:
        return list(EPS_LISTS[text])
    values: list[float] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise UserError(f"eps list {text!r} has an empty entry; separate values with single commas, e.g. 0,0.05,8/255")
        num, slash, den = item.partition("/")
        try:
            value = float(num) / float(den) if slash else float(num)
        except (ValueError, ZeroDivisionError):
            raise UserError(
                f"eps entry {item!r} in {text!r} is not a number or fraction; write e.g. 0.05 or 8/255, "
                f"or name a list ({', '.join(EPS_LISTS)})"
            ) from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise UserError(
                f"eps entry {item!r} in {text!r} is outside [0, 1]; budgets are in pixel units of [0, 1] images, "
                "e.g. 0.03 or 8/255"
            )
        if value not in values:
            values.append(value)
    return values


def _eps_values(eps_list: str | Iterable[float]) -> list[float]:
    if isinstance(eps_list, str):
        return parse_eps(eps_list)
    values: list[float] = []
    for eps in eps_list:
        eps = check_eps(eps)
        if eps not in values:
            values.append(eps)
    if not values:
        raise UserError("the eps list is empty; give at least one budget, e.g. 0,0.05,0.1")
    return values


def format_eps(eps: float) -> str:
    """Short label for a budget: '8/255' when it is a whole number of 8-bit levels, else '0.05'."""
    levels = eps * 255
    if eps > 0 and abs(levels - round(levels)) < 1e-6 and round(levels) < 32:
        return f"{round(levels)}/255"
    return f"{eps:g}"


def _sweep(model: nn.Module, x: Tensor, y: Tensor, eps_list: Sequence[float],
           targeted: bool = False) -> tuple[dict[float, Tensor], Tensor]:
    """FGSM images for every eps from one input gradient, and the clean logits of that same forward."""
    check_images(x)
    with eval_with_grad(model):
        grad, logits = input_grad(model, x, y)
    step = direction(grad, targeted)
    x = x.detach()
    # the same expression as fgsm(), so the images are bit-identical to separate calls
    return {eps: torch.clamp(x + eps * step, 0.0, 1.0) for eps in eps_list}, logits


def fgsm_sweep(model: nn.Module, x: Tensor, y: Tensor, eps_list: str | Iterable[float],
               targeted: bool = False) -> dict[float, Tensor]:
    """{eps: FGSM image batch} for every eps, from a single forward + backward; x in [0, 1]."""
    images, _ = _sweep(model, x, y, _eps_values(eps_list), targeted)
    return images


def _collect(shown: list[dict], spare: list[dict], examples: int, x: Tensor, x_adv: Tensor, y: Tensor,
             clean_pred: Tensor, pred: Tensor) -> None:
    """Add this batch's successful attacks to ``shown``: one per true class first, repeats to ``spare``."""
    fooled = ((clean_pred == y) & (pred != y)).nonzero().flatten().tolist()
    labels, preds = y.tolist(), pred.tolist()  # one device sync, not one per image
    for i in fooled:
        if len(shown) >= examples:
            return
        # loaders are often sorted by class: without this a gallery would show only the first class
        keep = spare if labels[i] in {e["true"] for e in shown} else shown
        if len(keep) < examples:
            # copy=True: on the CPU .to("cpu") is a view that would keep the whole batch alive
            keep.append({"original": x[i].to("cpu", copy=True), "adversarial": x_adv[i].to("cpu", copy=True),
                         "true": labels[i], "pred": preds[i]})


def evaluate_attack(model: nn.Module, loader: Iterable, attack: str = "fgsm",
                    eps_list: str | Iterable[float] = SEED_EPS, alpha: float | None = None,
                    steps: int | None = None, limit: int | None = None, device: str | torch.device = "cpu",
                    progress: bool = True, examples: int = 5, seed: int = 0, precision: str = "32-true") -> dict:
    """Top-1 accuracy of model under attack at each eps over a loader of (images in [0, 1], labels, ...).

    The model is moved to ``device`` and evaluated in eval mode (its modes are
    restored). ``attack`` is a name of ``fgvc.robust.attacks.ATTACKS``; ``alpha``/``steps`` of None
    (or 0) mean its defaults at each eps (FGSM ignores both, RS-FGSM the steps). Random starts
    (RS-FGSM, PGD) are seeded with ``seed``. ``precision`` (32-true | bf16-mixed | 16-mixed): the
    model's forwards run under that autocast; images, input gradients and steps stay fp32. Returns
    ``{"attack", "eps", "accuracy": {eps: fraction in [0, 1]}, "correct": {eps: n},
    "total": n, "settings": {eps: {"alpha", "steps"}}, "examples": {eps: [...]}}``;
    eps 0 is clean accuracy. Each example is a successful attack on an image the
    model classified correctly: ``{"original", "adversarial"}`` (CHW CPU tensors)
    and ``{"true", "pred"}`` class indices, at most ``examples`` per eps, covering
    as many true classes as the loader offers before repeating one.
    """
    if limit is not None and limit < 1:
        raise UserError(f"limit={limit!r} must be a positive number of images, or None for all")
    resolve_attack(attack, 0.0, alpha or None, steps or None)  # a bad name or setting fails before the eps list
    eps_values = _eps_values(eps_list)
    specs = {eps: resolve_attack(attack, eps, alpha or None, steps or None) for eps in eps_values}
    settings = {eps: spec.settings() for eps, spec in specs.items()}
    device = torch.device(device)
    model.to(device)
    generator = torch.Generator(device=device).manual_seed(seed) if specs[eps_values[0]].random_start else None
    correct = dict.fromkeys(eps_values, 0)
    gallery: dict[float, list[dict]] = {eps: [] for eps in eps_values}
    spare: dict[float, list[dict]] = {eps: [] for eps in eps_values}  # fooled images of classes already shown
    total = 0

    def predict(images: Tensor) -> Tensor:
        with torch.no_grad():
            return model(images).argmax(dim=1)

    with eval_with_grad(model), autocast(precision, device):  # eval mode for the whole sweep, modes restored after
        for batch in tqdm(loader, desc=f"{attack} attack", unit="batch", disable=not progress):
            if limit is not None and total >= limit:
                break
            x, y = batch[0], torch.as_tensor(batch[1])
            if limit is not None:
                x, y = x[: limit - total], y[: limit - total]
            x, y = x.to(device), y.to(device)
            if attack == "fgsm":
                adversarial, logits = _sweep(model, x, y, eps_values)
                clean_pred = logits.argmax(dim=1)  # the gradient's forward already gives clean predictions
            else:
                clean_pred = predict(x)
            for eps in eps_values:
                if eps == 0:
                    x_adv, pred = x, clean_pred
                else:
                    if attack == "fgsm":
                        x_adv = adversarial[eps]
                    else:
                        x_adv = specs[eps].run(model, x, y, generator=generator)
                    pred = predict(x_adv)
                correct[eps] += int((pred == y).sum())
                if len(gallery[eps]) < examples:
                    _collect(gallery[eps], spare[eps], examples, x, x_adv, y, clean_pred, pred)
            total += len(y)
    if total == 0:
        raise UserError("the loader gave no images to attack; check the split and --limit")
    for eps in eps_values:
        gallery[eps] += spare[eps][: examples - len(gallery[eps])]
    return {
        "attack": attack,
        "eps": eps_values,
        "accuracy": {eps: correct[eps] / total for eps in eps_values},
        "correct": correct,
        "total": total,
        "settings": settings,
        "examples": gallery,
        "precision": precision,
    }


def markdown_table(curves: dict[str, dict[float, float]]) -> str:
    """Markdown table of accuracy (fractions) per eps, one column per curve; with two curves a third gives B - A.

    For a standard run A and an adversarially trained run B, the eps-0 row of the
    difference is the clean-accuracy cost and the other rows the robust gain.
    """
    labels = list(curves)
    eps_values = sorted({eps for curve in curves.values() for eps in curve})
    header = ["eps", *labels] + ([f"{labels[1]} - {labels[0]}"] if len(labels) == 2 else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    for eps in eps_values:
        row = [format_eps(eps), *(cell(curves[label].get(eps)) for label in labels)]
        if len(labels) == 2:
            a, b = curves[labels[0]].get(eps), curves[labels[1]].get(eps)
            row.append("" if a is None or b is None else f"{b - a:+.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
