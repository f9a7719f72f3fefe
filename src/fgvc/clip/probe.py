"""Linear probe on frozen CLIP image features: L2-regularised logistic regression, decay swept on validation
(``fgvc.models.linear_probe``)."""

from __future__ import annotations

import time
from pathlib import Path

from fgvc.clip import outputs
from fgvc.clip.models import load_clip
from fgvc.clip.prompts import prompt_names, resolve_templates
from fgvc.clip.zeroshot import encode_split, evaluate, zeroshot_weights
from fgvc.devices import resolve_device
from fgvc.models.linear_probe import WEIGHT_DECAYS, fit_linear_probe, probe_accuracy


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
