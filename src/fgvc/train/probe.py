"""Linear probe on any backbone: frozen features, L2-regularised logistic regression.

The features are what the classifier's head sees (the input of its final linear layer, caught
with a forward hook), of the train / val / test images under the eval transform. The probe is
fgvc.models.linear_probe's: full-batch L-BFGS, weight decay swept on val, test scored once. It is the
reference a fine-tune should beat (a fine-tune below its own probe points to a BatchNorm or
learning-rate problem), and a study row (``{task: probe}``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from fgvc import config as config_mod
from fgvc import runs
from fgvc.api import build_model, pretraining_source
from fgvc.data import build_dataset
from fgvc.data.transforms import eval_transform
from fgvc.devices import resolve_device
from fgvc.errors import UserError
from fgvc.models.linear_probe import fit_linear_probe, probe_accuracy
from fgvc.protocol import run_protocol, val_draw


@torch.no_grad()
def head_inputs(model, loader, device="cpu", progress: bool = False, desc: str = "features"):
    """(features (N, D) float32, labels (N,)) for every batch of ``loader``: the input of ``model.head``."""
    feats, labels = [], []
    handle = model.head.register_forward_hook(lambda m, inp, out: feats.append(inp[0].detach().float().cpu()))
    try:
        model.eval().to(device)
        for x, y, *_ in tqdm(loader, desc=desc, leave=False, disable=not progress):
            model(x.to(device))
            labels.append(y)
    finally:
        handle.remove()
    return torch.cat(feats), torch.cat(labels)


def check_probe_out(out: str | Path, what: str = "out") -> Path:
    """``out`` (expanded) when a probe may write there: not a file, and not a finished probe (its
    metrics.json), which is never overwritten. UserError naming ``what`` (``out`` or ``--out``) otherwise."""
    out = runs.check_out_dir(out, what)
    if (out / "metrics.json").is_file():
        raise UserError(f"{out} already holds a finished probe (metrics.json); pass another {what}, or delete "
                        "the folder to probe again")
    return out


def new_probe_dir(cfg: config_mod.Config) -> Path:
    """Where a probe without an explicit folder goes: ``<cfg.out>/probe-<data>-<model>``, or with a ``-2``,
    ``-3``, ... suffix when that exists (a new folder, as `fgvc train` makes under ``out``). Nothing is
    created; UserError when ``cfg.out`` is a file."""
    parent = runs.check_out_dir(cfg.out, "out")
    stem = f"probe-{cfg.data.name}-{cfg.model.name}".replace("/", "_").replace(":", "_")
    path, n = parent / stem, 1
    while path.exists():
        n += 1
        path = parent / f"{stem}-{n}"
    return path


def run_probe(cfg: config_mod.Config, out: str | Path, batch_size: int = 64, progress: bool = True) -> dict:
    """Fit and score a linear probe on the frozen backbone ``cfg`` describes (model.name, model.weights
    or model.pretrained, data.*); writes ``out/metrics.json`` (task ``linear_probe``) and returns it.
    UserError before any work when ``out`` is a file or already holds a finished probe."""

    t0 = time.perf_counter()
    out = check_probe_out(out)
    d = cfg.data
    scored = eval_transform(d.image_size, d.crop_ratio)
    splits = {s: build_dataset(d.name, d.root, s, scored, d.val_fraction, cfg.train.seed, classes=d.classes)
              for s in ("train", "val", "test")}
    class_names = splits["train"].class_names
    model = build_model(cfg, len(class_names))
    accelerator = cfg.train.accelerator
    device = str(resolve_device(accelerator if accelerator in ("cpu", "cuda") else "auto"))
    data = {s: head_inputs(model, DataLoader(ds, batch_size=batch_size, num_workers=0), device, progress, s)
            for s, ds in splits.items()}
    probe = fit_linear_probe(*data["train"], *data["val"], len(class_names), device=device)
    test = probe_accuracy(probe, *data["test"])
    metrics = {"task": "linear_probe", "model": cfg.model.name, "pretrained": pretraining_source(cfg),
               "train_acc": probe_accuracy(probe, *data["train"])["acc"], "val_acc": probe["val_acc"],
               "test_acc": test["acc"], "test_top5": test.get("top5"), "weight_decay": probe["weight_decay"],
               "feature_dim": int(data["train"][0].shape[1]), "image_size": d.image_size,
               "train_images": len(splits["train"]), "val_images": len(splits["val"]),
               "test_images": len(splits["test"]), "seconds": round(time.perf_counter() - t0, 2), "device": device}
    metrics["protocol"] = run_protocol(
        "linear_probe", d.name, {s: len(ds) for s, ds in splits.items()}, pretrained=metrics["pretrained"],
        device=device, transform=splits["test"].transform, seed=cfg.train.seed,
        val_draw=val_draw(splits["val"], d.val_fraction, cfg.train.seed))
    runs.write_text_atomic(out / "config.yaml", config_mod.dump(cfg))
    runs.write_json_atomic(out / "classes.json", class_names)
    runs.write_json_atomic(out / "metrics.json", metrics)
    return metrics


__all__ = ["check_probe_out", "head_inputs", "new_probe_dir", "run_probe"]
