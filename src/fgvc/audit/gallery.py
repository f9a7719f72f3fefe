"""Thumbnail galleries of the audits: duplicate pairs side by side, label-noise suspects with their classes."""

from __future__ import annotations

from pathlib import Path

from fgvc import runs
from fgvc.data.base import read_rgb
from fgvc.errors import UnreadableImage

THUMB = 128  # px, the longer side of each thumbnail as decoded


def _thumb(path: str | Path):
    try:
        im = read_rgb(Path(path), THUMB)
    except UnreadableImage:
        return None
    im.thumbnail((THUMB, THUMB))
    return im


def _show(ax, path, title: str) -> None:
    im = _thumb(path)
    if im is not None:
        ax.imshow(im)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def plot_pairs(pairs: list[dict], path: Path, title: str, limit: int = 24) -> Path | None:
    """Up to ``limit`` pairs (closest first), two thumbnails per pair, four pairs per row; None when no pairs.

    Each pair is ``{"image", "image_label", "match", "match_label", "distance"}`` (paths and short labels)."""
    from matplotlib.figure import Figure

    shown = pairs[:limit]
    if not shown:
        return None
    cols = min(4, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 2.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, p in enumerate(shown):
        r, c = divmod(k, cols)
        _show(axes[r, 2 * c], p["image"], f"{_short(p['image_label'])}\n{_short(Path(p['image']).name)}")
        _show(axes[r, 2 * c + 1], p["match"], f"{_short(p['match_label'])}\n{_short(Path(p['match']).name)}\n"
                                              f"distance {p['distance']}")
    fig.suptitle(title, fontsize=9)
    return runs.save_figure(fig, path, dpi=90)


def plot_suspects(suspects: list[dict], path: Path, title: str, limit: int = 24) -> Path | None:
    """Up to ``limit`` suspects, six per row, each titled with its given and suggested class; None when none.

    Each suspect is ``{"path", "given", "suggested", "score"}`` (class names, cleanlab's label quality)."""
    from matplotlib.figure import Figure

    shown = suspects[:limit]
    if not shown:
        return None
    cols = min(6, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, s in enumerate(shown):
        _show(axes.flat[k], s["path"], f"given: {_short(s['given'])}\nsuggested: {_short(s['suggested'])}\n"
                                        f"quality {s['score']:.3f}")
    fig.suptitle(title, fontsize=9)
    return runs.save_figure(fig, path, dpi=90)


def _short(name: str, n: int = 24) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


__all__ = ["plot_pairs", "plot_suspects"]
