"""Heatmaps drawn over images: one panel per image (image | CAM | Grad-CAM ...), and a grid of rows.

Images are in [0, 1] already (models normalise inside), so nothing needs un-normalising.
Figures are drawn with matplotlib's Agg canvas directly (no pyplot state, no display
needed) and written atomically.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from fgvc.runs import save_figure

TITLES = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}


def to_hwc(image) -> np.ndarray:
    """A (3, H, W) tensor or (H, W, 3) array in [0, 1] -> (H, W, 3) float array in [0, 1]."""
    a = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.clip(a, 0.0, 1.0)


def overlay(image, heatmap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """(1 - alpha) * image + alpha * colormap(heatmap): an (H, W, 3) float array in [0, 1]."""
    img = to_hwc(image)
    m = heatmap.detach().cpu().float().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap, np.float32)
    if m.shape != img.shape[:2]:
        raise ValueError(f"map of shape {m.shape} does not match image of size {img.shape[:2]}")
    colour = colormaps[cmap](np.clip(m, 0.0, 1.0))[..., :3]
    return (1.0 - alpha) * img + alpha * colour


def _label(true_name: str | None, pred_name: str | None) -> str:
    # fine-grained class names are long; wrapped, they stay inside their column
    parts = []
    if true_name is not None:
        parts.append(textwrap.fill(f"true: {true_name}", 30))
    if pred_name is not None:
        parts.append(textwrap.fill(f"pred: {pred_name}", 30))
    return "\n".join(parts)


def _draw_row(axes, image, maps: Mapping[str, object], true_name, pred_name, alpha) -> None:
    axes[0].imshow(to_hwc(image))
    wrong = true_name is not None and pred_name is not None and true_name != pred_name
    axes[0].set_title(_label(true_name, pred_name), fontsize=7, color="firebrick" if wrong else "black")
    for ax, (method, heatmap) in zip(axes[1:], maps.items()):
        ax.imshow(overlay(image, heatmap, alpha))
        ax.set_title(TITLES.get(method, method), fontsize=8)
    for ax in axes:
        ax.set_axis_off()


def save_panel(image, maps: Mapping[str, object], true_name: str | None, pred_name: str | None,
               path: str | Path, alpha: float = 0.5) -> Path:
    """One PNG: the image (titled with true and predicted class) then each method's overlay, side by side."""
    cols = 1 + len(maps)
    fig = Figure(figsize=(2.4 * cols, 3.0), layout="constrained")  # room for wrapped titles
    axes = fig.subplots(1, cols, squeeze=False)[0]
    _draw_row(axes, image, maps, true_name, pred_name, alpha)
    return save_figure(fig, path)


def save_grid(images: Sequence, maps: Mapping[str, Sequence], true_names: Sequence[str | None],
              pred_names: Sequence[str | None], path: str | Path, alpha: float = 0.5) -> Path:
    """One PNG with a row per image: image | one overlay per method; ``maps[method][i]`` is image i's map."""
    n, cols = len(images), 1 + len(maps)
    if n == 0:
        raise ValueError("save_grid needs at least one image")
    fig = Figure(figsize=(2.4 * cols, 3.0 * n), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        row_maps = {method: m[i] for method, m in maps.items()}
        _draw_row(axes[i], images[i], row_maps, true_names[i], pred_names[i], alpha)
    return save_figure(fig, path)
