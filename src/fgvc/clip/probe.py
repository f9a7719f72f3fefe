"""Linear probe on frozen CLIP image features: L2-regularised logistic regression, decay swept on validation."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fgvc.clip import outputs
from fgvc.clip.models import load_clip
from fgvc.clip.prompts import prompt_names, resolve_templates
from fgvc.clip.zeroshot import encode_split, evaluate, zeroshot_weights
from fgvc.train.devices import resolve_device

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


def run_linear_probe(model_name: str, pretrained: str | None, dataset_name: str, root: str | Path,
                     out_dir: str | Path, templates: str | list[str] = "seed", weight_decays=WEIGHT_DECAYS,
                     batch_size: int = 64, device: str = "auto", num_workers: int = 2,
                     cache_dir: str | Path | None = None, use_cache: bool = True,
                     weights_cache_dir: str | Path | None = None, download: bool = True,
                     val_fraction: float = 0.1, seed: int = 0, progress: bool = True) -> dict:
    """Linear probe on cached CLIP features of train/val/test; writes metrics.json, sweep.csv, the probe weights.

    Also reports the zero-shot accuracy of the same features (``zeroshot_test_acc``) with ``templates``.
    """
    start = time.perf_counter()
    template_list = resolve_templates(templates)
    device = resolve_device(device)
    model, preprocess, tokenizer = load_clip(model_name, pretrained, device=device,
                                             cache_dir=weights_cache_dir, download=download)
    splits = {}
    for split in ("train", "val", "test"):
        splits[split] = encode_split(model, preprocess, model_name, pretrained, dataset_name, root, split,
                                     device=device, batch_size=batch_size, num_workers=num_workers,
                                     cache_dir=cache_dir, use_cache=use_cache, val_fraction=val_fraction,
                                     seed=seed, progress=progress)
    (tx, ty, train_set, _), (vx, vy, _, _), (sx, sy, _, _) = splits["train"], splits["val"], splits["test"]
    num_classes = len(train_set.class_names)
    probe = fit_linear_probe(tx, ty, vx, vy, num_classes, weight_decays, device=device)
    train, test = probe_accuracy(probe, tx, ty), probe_accuracy(probe, sx, sy)
    weights = zeroshot_weights(model, tokenizer, prompt_names(train_set.class_names, dataset_name), template_list)
    zeroshot = evaluate(sx, sy, weights, train_set.class_names)
    metrics = {
        "task": "clip_linear_probe",
        "train_acc": train["acc"], "val_acc": probe["val_acc"], "test_acc": test["acc"], "test_top5": test["top5"],
        "weight_decay": probe["weight_decay"], "sweep": probe["sweep"],
        "zeroshot_test_acc": zeroshot["top1"], "zeroshot_test_top5": zeroshot["top5"],
        "model": model_name, "pretrained": str(pretrained), "data": dataset_name, "templates": template_list,
        "n_train": len(ty), "n_val": len(vy), "n_test": len(sy), "seconds": time.perf_counter() - start,
        "device": str(device),
    }
    out = Path(out_dir).expanduser()
    outputs.write_csv(out / "sweep.csv", ["weight_decay", "val_acc"],
                      [[r["weight_decay"], r["val_acc"]] for r in probe["sweep"]])
    outputs.save_tensors(out / "checkpoints" / "linear_probe.safetensors",
                         {"weight": probe["weight"], "bias": probe["bias"]},
                         metadata={"model": model_name, "pretrained": str(pretrained),
                                   "class_names": "\n".join(train_set.class_names)})
    outputs.write_json(out / "metrics.json", metrics)
    return metrics
