"""CLIP fine-tuning through the classifier loop, and WiSE-FT weight-space interpolation.

Fine-tuning is ``fgvc train`` with ``model.name=clip:<open_clip name>`` (fgvc.clip.classifier):
the head starts as the zero-shot text weights times CLIP's logit scale, and the loop brings
resume, multi-device training, precision, early stopping, the tricks and the run directory
every analysis reads. ``run_finetune`` is the recipe behind ``fgvc clip finetune`` (AdamW,
lr 1e-5, weight decay 0.1 off biases and gains, cosine schedule after a 10% warm-up). After
training, ``score_wise_ft`` scores the straight line between the zero-shot and the fine-tuned
weights (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from fgvc import api, runs
from fgvc import config as config_mod
from fgvc.errors import UserError
from fgvc.models.factory import is_clip

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def wise_ft(zeroshot_state: dict, finetuned_state: dict, alpha: float) -> dict:
    """Weights ``(1 - alpha) * zero-shot + alpha * fine-tuned`` (alpha in [0, 1]); integer buffers from fine-tuned."""
    return {
        k: torch.lerp(zeroshot_state[k].to(v.dtype), v, alpha) if v.is_floating_point() else v
        for k, v in finetuned_state.items()
    }


def choose_alpha(curve: list[dict]) -> dict:
    """The row of ``curve`` (dicts with ``alpha``, ``val_acc``, ``test_acc``) whose val top-1 is best, the
    larger alpha on a tie; a missing val score (an empty val split) counts as 0. Test accuracy never
    decides: it is what the chosen alpha reports (Wortsman et al. 2022 choose alpha on held-out data)."""
    return max(curve, key=lambda r: (r["val_acc"] or 0.0, r["alpha"]))


def score_wise_ft(run_dir: str | Path, progress: bool = True, device: str = "auto") -> dict:
    """Score a finished CLIP run along WiSE-FT's path, for each alpha of its ``clip.wise_ft_alphas``:
    val and test top-1 of ``wise_ft(zero-shot, best checkpoint, alpha)``, in the precision the run trained in.

    The zero-shot weights are rebuilt from the run's config (pretrained tower + text head), so they are
    exactly epoch 0's. Writes ``wise_ft.csv`` and adds to metrics.json ``wise_ft`` (one row per alpha),
    ``wise_ft_alpha`` (best on val; the larger alpha on a tie), ``wise_ft_test_acc`` and
    ``zeroshot_test_acc`` (alpha 0: the zero-shot head under the run's eval pipeline). Returns metrics."""
    from fgvc.api import build_model
    from fgvc.evaluation import Scorer

    run = api.Run(run_dir)
    cfg, metrics = run.config, run.metrics
    if not metrics:
        raise UserError(f"{run.dir} has not finished training (no metrics.json); finish it with "
                        f"`fgvc train --resume {run.dir}` first")
    scorer = Scorer(run, device, "run", progress=False)
    finetuned = {k: v.detach().clone() for k, v in scorer.model.state_dict().items()}
    zeroshot = build_model(cfg, len(run.class_names), run.class_names).state_dict()
    splits = {s: run.dataset(s) for s in ("val", "test")}
    curve = []
    for alpha in cfg.clip.wise_ft_alphas:
        scorer.model.load_state_dict(wise_ft(zeroshot, finetuned, float(alpha)))
        row = {"alpha": float(alpha)}
        for split, dataset in splits.items():
            scored = scorer(dataset, desc=f"WiSE-FT alpha {alpha:g} {split}") if len(dataset) else None
            row[f"{split}_acc"] = scored["acc"] if scored else None
            if split == "test":
                row["test_top5"] = scored["top5"]
        curve.append(row)
        if progress:
            val = "-" if row["val_acc"] is None else f"{row['val_acc']:.4f}"
            print(f"WiSE-FT alpha {alpha:g}: val top-1 {val}, test top-1 {row['test_acc']:.4f}")
    scorer.model.load_state_dict(finetuned)
    chosen = choose_alpha(curve)
    runs.write_csv_atomic(run.dir / "wise_ft.csv", curve, ["alpha", "val_acc", "test_acc", "test_top5"])
    metrics.update(wise_ft=curve, wise_ft_alpha=chosen["alpha"], wise_ft_test_acc=chosen["test_acc"],
                   zeroshot_test_acc=next((r["test_acc"] for r in curve if r["alpha"] == 0.0), None))
    run.write_json("metrics.json", metrics)
    return metrics


def after_training(cfg: config_mod.Config, progress: bool = True) -> Callable[[Path], dict] | None:
    """The step ``fgvc.train.train(after=...)`` runs on a finished run of ``cfg``: ``score_wise_ft`` for a
    CLIP model with ``clip.wise_ft_alphas``, None for any other run. Every caller of the loop that may
    train a CLIP config (``fgvc train``, ``fgvc clip finetune``, a study row) passes it."""
    if not (is_clip(cfg.model.name) and cfg.clip.wise_ft_alphas):
        return None
    return lambda run_dir: score_wise_ft(run_dir, progress=progress)


def finetune_config(model_name: str, pretrained: str | None, dataset_name: str, root: str | Path,
                    templates: str = "seed", descriptions: str | Path | None = None, epochs: int = 3,
                    batch_size: int = 32, lr: float = 1e-5, weight_decay: float = 0.1, alphas=ALPHAS,
                    device: str = "auto", num_workers: int = 2, val_fraction: float = 0.1, seed: int = 0,
                    augment: bool = True, weights_cache_dir: str | Path | None = None, download: bool = True,
                    loggers: str = "", overrides: list[str] | dict | None = None) -> config_mod.Config:
    """The classifier-loop config of ``fgvc clip finetune``: CLIP ``model_name`` (open_clip name) from
    ``pretrained`` (tag or file; None: random weights), its image size, the recipe above; ``augment``
    turns on aug.geometric; ``overrides`` (key=value) apply last."""
    from fgvc.clip.classifier import open_clip_name

    if epochs < 1:
        raise UserError(f"epochs={epochs} trains nothing; use at least 1 (zero-shot accuracy: fgvc zeroshot)")
    accelerator = "cuda" if str(device).startswith("cuda") else str(device)
    values = {
        "model.name": "clip:" + open_clip_name(model_name), "model.pretrained": bool(pretrained),
        "clip.pretrained": str(pretrained or ""), "clip.templates": templates,
        "clip.descriptions": str(descriptions or ""), "clip.wise_ft_alphas": list(alphas),
        "clip.cache_dir": str(weights_cache_dir or ""), "clip.offline": not download,
        "data.name": dataset_name, "data.root": str(root), "data.image_size": _tower_size(model_name),
        "data.val_fraction": val_fraction, "data.num_workers": num_workers,
        "train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr, "train.weight_decay": weight_decay,
        "train.schedule": "cosine", "train.warmup": 0.1, "train.filter_bias_and_bn": True, "train.seed": seed,
        "train.accelerator": accelerator, "train.loggers": loggers, "aug.geometric": augment,
    }
    cfg = config_mod.load(None, values)
    if overrides:
        config_mod.apply(cfg, overrides if isinstance(overrides, dict) else config_mod.parse_overrides(list(overrides)))
    return cfg


def _tower_size(model_name: str) -> int:
    """The image size of an open_clip architecture by name (224 when its config does not say)."""
    import open_clip

    from fgvc.clip.classifier import open_clip_name

    model_cfg = open_clip.get_model_config(open_clip_name(model_name)) or {}
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    return int(size if isinstance(size, int) else size[0])


def run_finetune(model_name: str, pretrained: str | None, dataset_name: str, root: str | Path, out_dir: str | Path,
                 progress: bool = True, resume: bool = False, **kwargs) -> dict:
    """Fine-tune a CLIP image tower on a dataset into the run directory ``out_dir`` (``finetune_config``'s
    keyword arguments); returns its metrics.json: the classifier's fields (``test_acc`` is the best
    checkpoint, alpha 1) plus ``task: clip_finetune`` and the WiSE-FT fields of ``score_wise_ft``."""
    from fgvc.train import train

    cfg = finetune_config(model_name, pretrained, dataset_name, root, **kwargs)
    run_dir = train(cfg, run_dir=out_dir, resume=resume, progress=progress, after=after_training(cfg, progress))
    return runs.read_metrics(run_dir)


__all__ = ["ALPHAS", "after_training", "choose_alpha", "finetune_config", "run_finetune", "score_wise_ft", "wise_ft"]
