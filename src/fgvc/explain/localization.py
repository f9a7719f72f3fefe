"""How well a map localises the object: scores against ground-truth boxes.

Boxes are XYXY in pixels of the image the map covers, pixel (i, j) spanning
[j, j+1) x [i, i+1) (torchvision's convention: the whole image is (0, 0, W, H)).
An image with several instances (two dogs) gives a (K, 4) box, rows of NaN ignored:
the scores use the union of its boxes, so a hit on any instance counts.

- energy in box: the share of the map's mass inside the box, in [0, 1]. Pixels cut by
  the box edge count by the fraction inside, so a uniform map scores exactly the box's
  area share: that is the chance level to beat.
- pointing game (Zhang et al. 2016): whether the map's maximum falls inside the box
  (optionally grown by a tolerance). A uniformly random point hits with probability
  equal to the area share.

A flat (all-zero) map has neither a mass nor a peak: ``evaluate_localization`` leaves it out of
both scores alike and counts it in ``n_empty`` (both scores are NaN when every map is flat).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from fgvc.explain.cam import explain


def _union(box) -> list[tuple[float, float, float, float]]:
    """Disjoint XYXY rectangles covering the union of a (4,) box or the non-NaN rows of a (K, 4) one."""
    rows = [tuple(float(v) for v in r) for r in torch.as_tensor(box, dtype=torch.float64).reshape(-1, 4)]
    rows = [r for r in rows if not any(math.isnan(v) for v in r)]
    if len(rows) <= 1:
        return rows
    out = []
    xs = sorted({v for x0, _, x1, _ in rows for v in (x0, x1)})
    for xa, xb in zip(xs, xs[1:]):  # vertical slabs between box edges; in each, merge the y intervals
        spans = sorted((y0, y1) for x0, y0, x1, y1 in rows if x0 <= xa and xb <= x1)
        for y0, y1 in spans:
            if out and out[-1][0] == xa and y0 <= out[-1][3]:
                out[-1] = (xa, out[-1][1], xb, max(out[-1][3], y1))
            else:
                out.append((xa, y0, xb, y1))
    return out


def box_area_share(box: Sequence[float] | Tensor, height: int, width: int) -> float:
    """Area of the box (or boxes' union) clipped to the image, as a fraction of the image area, in [0, 1]."""
    area = 0.0
    for x0, y0, x1, y1 in _union(box):
        area += max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
    return area / (height * width)


def _coverage(lo: float, hi: float, n: int) -> Tensor:
    """Fraction of each of ``n`` unit pixels [k, k+1) that lies inside [lo, hi)."""
    k = torch.arange(n, dtype=torch.float64)
    return (torch.minimum(k + 1, torch.tensor(hi)) - torch.maximum(k, torch.tensor(lo))).clamp(0, 1)


def energy_in_box(heatmap: Tensor, box: Sequence[float] | Tensor) -> float:
    """Share of a non-negative (H, W) map's mass inside the box, in [0, 1]; NaN for an all-zero map."""
    m = torch.as_tensor(heatmap).detach().to("cpu", torch.float64)
    if m.dim() != 2:
        raise ValueError(f"expected one (H, W) map, got shape {tuple(m.shape)}")
    total = m.sum().item()
    if total <= 0:
        return math.nan
    weight = sum(_coverage(y0, y1, m.shape[0])[:, None] * _coverage(x0, x1, m.shape[1])[None, :]
                 for x0, y0, x1, y1 in _union(box))
    return float((m * weight).sum().item() / total)


def pointing_game(heatmap: Tensor, box: Sequence[float] | Tensor, tolerance_px: float = 0) -> bool:
    """Whether the map's maximum lies in the box grown by ``tolerance_px`` (pixels).

    Tied maxima (a plateau) point at their mean position; an all-zero map points nowhere and misses
    (``evaluate_localization`` leaves such flat maps out of the hit rate instead of counting them as misses).
    """
    m = torch.as_tensor(heatmap).detach().float()
    if m.dim() != 2:
        raise ValueError(f"expected one (H, W) map, got shape {tuple(m.shape)}")
    if not (m.max() > 0):
        return False
    # an upsampled coarse map has a plateau at its peak: point at the plateau's centre, not its corner
    ii, jj = torch.nonzero(m >= m.max() - 1e-6 * m.max(), as_tuple=True)
    cy, cx = ii.float().mean().item() + 0.5, jj.float().mean().item() + 0.5  # pixel centres
    t = float(tolerance_px)
    return any(x0 - t <= cx <= x1 + t and y0 - t <= cy <= y1 + t for x0, y0, x1, y1 in _union(box))


def evaluate_localization(model: nn.Module, loader: Iterable, methods: Sequence[str] = ("cam", "gradcam"),
                          limit: int | None = None, device: str | torch.device = "cpu", progress: bool = True,
                          target: str = "label", tolerance_px: float = 0) -> dict[str, dict]:
    """Mean energy-in-box and pointing-game hit rate per method over ``loader``'s (image, label, box) batches.

    ``target="label"`` explains the true class (the usual protocol: localise the object
    given its class), ``"pred"`` the predicted one. Images without a box (NaN) are
    skipped; ``limit`` caps the number of images scored. Returns ``{method: {energy_in_box,
    pointing_game, box_area_share, n, n_empty}}`` with fractions in [0, 1]; ``n_empty``
    counts flat (all-zero) maps, which have no mass and no peak: left out of the energy mean and
    of the pointing-game hit rate alike (both NaN when every map is flat). ``box_area_share`` is
    the mean over all ``n`` images.
    """
    if target not in ("label", "pred"):
        raise ValueError(f"target must be 'label' or 'pred', got {target!r}")
    model = model.to(device)
    sums = {m: {"energy": 0.0, "n_energy": 0, "hits": 0, "share": 0.0, "n": 0, "n_empty": 0} for m in methods}
    # n_energy: the maps with mass, which are also the ones with a peak (the pointing game's images)
    seen = 0
    bar = None
    if progress:
        from tqdm import tqdm

        total = len(loader.dataset) if hasattr(loader, "dataset") else None
        total = limit if total is None else (total if limit is None else min(limit, total))
        bar = tqdm(total=total, desc="localisation", unit="img", leave=False)
    try:
        for batch in loader:
            if limit is not None and seen >= limit:
                break
            images, labels, boxes = batch[0], batch[1], batch[2]
            valid = ~torch.isnan(boxes).any(dim=-1)  # (B,) or, with several instances, (B, K)
            keep = valid if valid.dim() == 1 else valid.any(dim=1)
            if limit is not None:
                keep &= torch.cumsum(keep.long(), 0) <= limit - seen
            if not keep.any():
                continue
            images, labels, boxes = images[keep].to(device), labels[keep].to(device), boxes[keep]
            h, w = images.shape[-2:]
            for method in methods:
                maps = explain(model, images, method, labels if target == "label" else None).cpu()
                s = sums[method]
                for heatmap, box in zip(maps, boxes):
                    e = energy_in_box(heatmap, box)
                    if math.isnan(e):
                        s["n_empty"] += 1
                    else:  # a flat map has no peak either: it is no pointing-game miss
                        s["energy"] += e
                        s["n_energy"] += 1
                        s["hits"] += pointing_game(heatmap, box, tolerance_px)
                    s["share"] += box_area_share(box, h, w)
                    s["n"] += 1
            seen += len(images)
            if bar is not None:
                bar.update(len(images))
    finally:
        if bar is not None:
            bar.close()
    return {
        m: {
            "energy_in_box": s["energy"] / s["n_energy"] if s["n_energy"] else math.nan,
            "pointing_game": s["hits"] / s["n_energy"] if s["n_energy"] else math.nan,
            "box_area_share": s["share"] / s["n"] if s["n"] else math.nan,
            "n": s["n"],
            "n_empty": s["n_empty"],
        }
        for m, s in sums.items()
    }


def format_table(results: dict[str, dict]) -> str:
    """A Markdown table: one row per method, energy in box vs the box's area share (chance), pointing game;
    n/a where every map was flat (the images column counts the flat maps)."""
    lines = [
        "| method | energy in box | box area share (chance) | pointing game | images |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, r in results.items():
        empty = r.get("n_empty", 0)  # maps with no mass (flat): energy in box is undefined for them
        energy, pointing = ("n/a" if math.isnan(r[k]) else f"{r[k]:.3f}" for k in ("energy_in_box", "pointing_game"))
        lines.append(f"| {method} | {energy} | {r['box_area_share']:.3f} | {pointing} | {r['n']}"
                     + (f" ({empty} flat maps)" if empty else "") + " |")
    return "\n".join(lines)
