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


def _boxes(box) -> list[tuple[float, float, float, float]]:
    """XYXY rows of a (4,) or (K, 4) box in pixels of the shown image; rows with NaN (no box) left out."""
    if box is None:
        return []
    rows = torch.as_tensor(box, dtype=torch.float32).reshape(-1, 4)
    return [tuple(float(v) for v in r) for r in rows if not torch.isnan(r).any()]


def _draw_box(ax, box) -> bool:
    from matplotlib.patches import Rectangle

    rows = _boxes(box)
    for x0, y0, x1, y1 in rows:
        # imshow puts pixel centres on integers: pixel edges are at -0.5
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white",
                               linewidth=1.5, linestyle="--", label="ground-truth box"))
    return bool(rows)


def _draw_row(axes, image, maps: Mapping[str, object], true_name, pred_name, alpha, box=None,
              explained: str | None = None) -> None:
    axes[0].imshow(to_hwc(image))
    wrong = true_name is not None and pred_name is not None and true_name != pred_name
    axes[0].set_title(_label(true_name, pred_name), fontsize=7, color="firebrick" if wrong else "black")
    explained = explained if explained is not None else pred_name  # fgvc explain explains the prediction
    for ax, (method, heatmap) in zip(axes[1:], maps.items()):
        ax.imshow(overlay(image, heatmap, alpha))
        title = TITLES.get(method, method)
        if explained is not None:
            title += "\n" + textwrap.fill(f"for: {explained}", 30)
        ax.set_title(title, fontsize=7)
    for ax in axes:
        _draw_box(ax, box)
        ax.set_axis_off()


def _colorbar(fig, axes, rows: int = 1, cmap: str = "jet") -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    shrink = 0.8 if rows <= 2 else max(0.2, 2.0 / rows)  # about two rows tall in a long grid
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=axes, shrink=shrink, aspect=20, pad=0.02)
    bar.set_label("map, scaled per image (0 low, 1 its maximum)", fontsize=7)
    bar.ax.tick_params(labelsize=7)


def panel_figure(image, maps: Mapping[str, object], true_name: str | None, pred_name: str | None,
                 alpha: float = 0.5, box=None, explained: str | None = None, title: str = "") -> Figure:
    """The image (titled with true and predicted class) then each method's overlay, titled with the
    class it explains (default: the prediction), a colour bar, and the ground-truth box when given
    (XYXY pixels of ``image``, a (4,) or (K, 4) tensor; NaN rows are no box)."""
    cols = 1 + len(maps)
    fig = Figure(figsize=(2.4 * cols + 0.8, 4.2), layout="constrained")  # room for wrapped titles
    axes = fig.subplots(1, cols, squeeze=False)[0]
    _draw_row(axes, image, maps, true_name, pred_name, alpha, box, explained)
    _colorbar(fig, list(axes))
    if title or _boxes(box):
        fig.suptitle(title + (" (dashed: ground-truth box)" if _boxes(box) else ""), fontsize=8)
    return fig


def save_panel(image, maps: Mapping[str, object], true_name: str | None, pred_name: str | None,
               path: str | Path, alpha: float = 0.5, box=None, explained: str | None = None,
               title: str = "") -> Path:
    """One PNG of ``panel_figure``."""
    return save_figure(panel_figure(image, maps, true_name, pred_name, alpha, box, explained, title), path)


def grid_figure(images: Sequence, maps: Mapping[str, Sequence], true_names: Sequence[str | None],
                pred_names: Sequence[str | None], alpha: float = 0.5, boxes: Sequence | None = None,
                title: str = "") -> Figure:
    """A row per image: image | one overlay per method (``maps[method][i]`` is image i's map), one
    colour bar, boxes drawn where ``boxes[i]`` has one."""
    n, cols = len(images), 1 + len(maps)
    if n == 0:
        raise ValueError("save_grid needs at least one image")
    boxes = list(boxes) if boxes is not None else [None] * n
    fig = Figure(figsize=(2.4 * cols + 0.8, 3.0 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        row_maps = {method: m[i] for method, m in maps.items()}
        _draw_row(axes[i], images[i], row_maps, true_names[i], pred_names[i], alpha, boxes[i])
    _colorbar(fig, axes.ravel().tolist(), rows=n)
    if title or any(_boxes(b) for b in boxes):
        fig.suptitle(title + (" (dashed: ground-truth box)" if any(_boxes(b) for b in boxes) else ""), fontsize=9)
    return fig


def save_grid(images: Sequence, maps: Mapping[str, Sequence], true_names: Sequence[str | None],
              pred_names: Sequence[str | None], path: str | Path, alpha: float = 0.5, boxes: Sequence | None = None,
              title: str = "") -> Path:
    """One PNG of ``grid_figure``."""
    return save_figure(grid_figure(images, maps, true_names, pred_names, alpha, boxes, title), path)
