"""Figures for attacks: accuracy against eps (seed Fig. 9/11) and a gallery of adversarial examples (Fig. 10)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from torch import Tensor

from fgvc.data.base import readable_name
from fgvc.devices import autocast
from fgvc.models.freeze import eval_with_grad
from fgvc.robust.attacks import resolve_attack
from fgvc.robust.sweep import format_eps
from fgvc.runs import save_figure


def plot_accuracy_vs_eps(results: Mapping[str, Mapping[float, float]], path: str | Path,
                         title: str = "Accuracy under FGSM attack", xlabel: str = "eps (pixel units of [0, 1])") -> Path:
    """One curve per label of accuracy (fraction in [0, 1]) against eps, e.g. standard vs adversarially trained."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for label, curve in results.items():
        eps_values = sorted(curve)
        ax.plot(eps_values, [curve[e] for e in eps_values], marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel="accuracy", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if results:
        ax.legend()
    return save_figure(fig, path, dpi=120)


def _hwc(image: Tensor):
    image = image.detach().float().cpu().clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _name(index: int, class_names: Sequence[str] | None, width: int = 20) -> str:
    """"id name": the 1-based class id (the folder prefix, e.g. CUB's 001) then the whole name, wrapped at
    word boundaries, never cut: similar names stay distinct."""
    import re

    if not (class_names and 0 <= index < len(class_names)):
        return f"class {index + 1}"
    raw = class_names[index]
    prefix = re.match(r"^(\d+)[._-]", raw)
    name = f"{int(prefix.group(1)) if prefix else index + 1} {readable_name(raw)}"
    return "\n".join(textwrap.wrap(name, width, break_long_words=False) or [name])


AttackImages = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]


def attack_images(model, attack: str, settings: Mapping[float, Mapping], device="cpu", seed: int = 0,
                  precision: str = "32-true") -> AttackImages:
    """``f(x, y, eps) -> (x_adv, pred)`` for the gallery: the sweep's attack with its per-eps settings and
    precision (eps 0: the clean images and their predictions)."""
    import torch

    def run(x: Tensor, y: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        x, y = x.to(device), y.to(device)
        with eval_with_grad(model.to(device)), autocast(precision, torch.device(device)):
            if eps == 0:
                x_adv = x
            else:
                s = settings.get(eps, {})
                spec = resolve_attack(attack, eps, s.get("alpha"), s.get("steps"))
                generator = torch.Generator(device=x.device).manual_seed(seed) if spec.random_start else None
                x_adv = spec.run(model, x, y, generator=generator)
            with torch.no_grad():
                pred = model(x_adv).argmax(dim=1)
        return x_adv.detach().cpu(), pred.cpu()

    return run


def gallery_rows(examples: Mapping[float, Sequence[Mapping]], attack_fn: AttackImages | None,
                 rows: int = 5) -> tuple[list[float], list[dict]]:
    """(eps columns, rows) of the gallery: the images fooled at the largest eps that has examples, each
    attacked at every eps > 0 by ``attack_fn`` (the same images in every column). Without ``attack_fn``
    only that largest eps is shown. A row: ``{"original", "true", "clean_pred", "adversarial": {eps: (image,
    pred)}}``."""
    import torch

    with_examples = sorted(eps for eps, shown in examples.items() if eps > 0 and shown)
    if not with_examples:
        return [], []
    top = with_examples[-1]
    chosen = list(examples[top])[:rows]
    columns = sorted(eps for eps in examples if eps > 0) if attack_fn else [top]
    x = torch.stack([e["original"] for e in chosen])
    y = torch.tensor([e["true"] for e in chosen])
    if attack_fn:
        _, clean_pred = attack_fn(x, y, 0.0)
        attacked = {eps: attack_fn(x, y, eps) for eps in columns}
        clean = clean_pred.tolist()
    else:
        attacked = {top: (torch.stack([e["adversarial"] for e in chosen]), torch.tensor([e["pred"] for e in chosen]))}
        clean = y.tolist()  # stored examples were classified correctly before the attack
    out = [{"original": x[i], "true": int(y[i]), "clean_pred": clean[i],
            "adversarial": {eps: (attacked[eps][0][i], int(attacked[eps][1][i])) for eps in columns}}
           for i in range(len(chosen))]
    return columns, out


def gallery_figure(columns: Sequence[float], rows: Sequence[Mapping], class_names: Sequence[str] | None,
                   title: str = "") -> Figure:
    """Rows of images: the clean image, the attacked image at each eps, and the perturbation at the
    largest eps (scaled per channel so that mid-grey is 0 and 0 / 1 are -eps / +eps). Each cell names the
    predicted class, green when right and red when the attack fooled the model."""
    n_cols = 2 + len(columns) if columns else 1
    n_rows = max(1, len(rows))
    # room for the longest wrapped name: its lines above each cell (7-pt text, about 0.13 in a line)
    lines = max([_name(i, class_names).count("\n") + 1 for i in range(len(class_names or []))] + [1])
    fig = Figure(figsize=(1.75 * n_cols, (1.6 + 0.13 * lines) * n_rows + 0.9), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if not rows:
        axes[0, 0].text(0.5, 0.5, "no successful attack to show", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
        return fig

    def show(ax, image, **kwargs):
        gray = image.shape[0] == 1
        ax.imshow(_hwc(image), cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest", **kwargs)

    def pred_title(ax, header, pred, true):
        ok = pred == true
        ax.set_title(f"{header}{_name(pred, class_names)}", fontsize=7, color="tab:green" if ok else "firebrick")

    top = columns[-1]
    for i, row in enumerate(rows):
        true = row["true"]
        show(axes[i, 0], row["original"])
        pred_title(axes[i, 0], "clean\n" if i == 0 else "", row["clean_pred"], true)
        axes[i, 0].set_ylabel(f"true:\n{_name(true, class_names)}", fontsize=7)
        for j, eps in enumerate(columns, start=1):
            image, pred = row["adversarial"][eps]
            show(axes[i, j], image)
            pred_title(axes[i, j], f"eps = {format_eps(eps)}\n" if i == 0 else "", pred, true)
        delta = (row["adversarial"][top][0].float() - row["original"].float()) / max(top, 1e-12)
        show(axes[i, -1], delta * 0.5 + 0.5)  # per channel: mid-grey 0, 0 / 1 at -eps / +eps
        if i == 0:
            axes[i, -1].set_title(f"perturbation\nat eps = {format_eps(top)}", fontsize=7)
    note = ("rows: the same images in every column; cell titles: predicted class (green right, red fooled); "
            "last column: attacked - clean per channel, mid-grey = 0, dark / light = -eps / +eps")
    width = max(40, int(1.75 * n_cols * 13))  # characters of 8 pt text across the figure: wrapped to fit
    text = "\n".join(textwrap.fill(part, width) for part in ([title] if title else []) + [note])
    fig.suptitle(text, fontsize=8)
    return fig


def save_gallery(examples: Mapping[float, Sequence[Mapping]], class_names: Sequence[str] | None,
                 path: str | Path, rows: int = 5, attack_fn: AttackImages | None = None, title: str = "") -> Path:
    """The gallery of ``gallery_rows`` / ``gallery_figure`` as a PNG.

    ``examples`` is ``evaluate_attack(...)["examples"]``; ``attack_fn`` (see ``attack_images``)
    attacks the chosen images at every eps so that each row is one image across eps.
    """
    columns, shown = gallery_rows(examples, attack_fn, rows)
    return save_figure(gallery_figure(columns, shown, class_names, title), path, dpi=120)
