"""A linear classifier on frozen features: L2-regularised logistic regression by full-batch L-BFGS, the
weight decay swept on validation. ``fgvc clip probe`` (CLIP image features), ``fgvc probe`` (any
backbone's pooled features) and the label-noise audit (out-of-fold probes) fit it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# strong to weak; each fit warm-starts from the previous one, so the sweep costs little more than one fit
WEIGHT_DECAYS = tuple(10.0 ** k for k in range(0, -8, -1))


def _fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, init=None,
         max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + weight_decay / 2 * ||W||^2 by full-batch L-BFGS."""
    w = (init[0].clone() if init else torch.zeros(num_classes, x.shape[1], device=x.device)).requires_grad_()
    b = (init[1].clone() if init else torch.zeros(num_classes, device=x.device)).requires_grad_()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                     num_classes: int, weight_decays=WEIGHT_DECAYS, max_iter: int = 100,
                     device: str | torch.device = "cpu") -> dict:
    """Fit one probe per weight decay on train, keep the best on val (ties: the stronger decay).

    Features are standardised with the train mean and std. Returns ``weight`` (C, D) and
    ``bias`` (C,) acting on raw features (standardisation folded in), ``weight_decay``,
    ``val_acc`` and ``sweep`` (one ``{weight_decay, val_acc}`` per value).
    """
    device = torch.device(device)
    x, vx = train_x.float().to(device), val_x.float().to(device)
    y, vy = torch.as_tensor(train_y).long().to(device), torch.as_tensor(val_y).long().to(device)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x, vx = (x - mean) / std, (vx - mean) / std
    best, sweep, params = None, [], None
    for wd in sorted(weight_decays, reverse=True):
        params = _fit(x, y, num_classes, wd, params, max_iter)
        acc = float(((vx @ params[0].T + params[1]).argmax(1) == vy).float().mean()) if len(vy) else 0.0
        sweep.append({"weight_decay": wd, "val_acc": acc})
        if best is None or acc > best[0]:
            best = (acc, wd, params)
    acc, wd, (w, b) = best
    # fold the standardisation into the linear map: w (x - m) / s + b = (w / s) x + (b - w m / s)
    w_raw = w / std
    return {"weight": w_raw.cpu(), "bias": (b - w_raw @ mean).cpu(), "weight_decay": wd, "val_acc": acc,
            "sweep": sweep}


def probe_accuracy(probe: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    """``acc`` and ``top5`` (fractions) of a fitted probe on features ``x``."""
    logits = x.float().cpu() @ probe["weight"].T + probe["bias"]
    y = torch.as_tensor(y).long().cpu()
    topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
    n = max(len(y), 1)
    return {"acc": float((topk[:, 0] == y).sum()) / n, "top5": float((topk == y[:, None]).any(1).sum()) / n}


__all__ = ["WEIGHT_DECAYS", "fit_linear_probe", "probe_accuracy"]
