"""End-to-end CLIP fine-tuning from the zero-shot head, and WiSE-FT weight-space interpolation.

The head starts as the zero-shot text weights times CLIP's logit scale, so epoch 0 is the
zero-shot classifier and fine-tuning moves away from it (Wortsman et al. 2022, WiSE-FT).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm.auto import tqdm

from fgvc.clip import outputs
from fgvc.clip.models import ClipClassifier, autocast, image_size, load_clip
from fgvc.clip.prompts import load_descriptions, match_descriptions, prompt_names, resolve_templates
from fgvc.clip.zeroshot import zeroshot_weights
from fgvc.errors import UserError
from fgvc.train.devices import resolve_device

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class FinetuneResult:
    model: ClipClassifier  # holds the best (by validation accuracy) fine-tuned weights
    zeroshot_state: dict  # the classifier's weights before any step, on CPU
    finetuned_state: dict  # the best weights, on CPU
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; 0 = no epoch improved on validation
    train_images_per_second: float = 0.0


def train_transform(size: int) -> v2.Compose:
    """PIL -> [0, 1] tensor with random resized crop and flip, the usual CLIP fine-tuning augmentation."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
    ])


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, loader: DataLoader, device: str | torch.device = "cpu") -> dict:
    """``acc``, ``top5`` (fractions) and mean cross-entropy ``loss`` of a classifier on [0, 1] images."""
    device = torch.device(device)
    model.eval()
    correct = top5 = loss = n = 0
    for batch in loader:
        x, y = batch[0].to(device), torch.as_tensor(batch[1]).to(device)
        with autocast(device):
            logits = model(x).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct += int((topk[:, 0] == y).sum())
        top5 += int((topk == y[:, None]).any(1).sum())
        n += len(y)
    n = max(n, 1)
    return {"acc": correct / n, "top5": top5 / n, "loss": loss / n}


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def finetune_clip(clip_model, tokenizer, class_names: list[str], templates: list[str] | str,
                  train_loader: DataLoader, val_loader: DataLoader | None = None, *,
                  descriptions: list[list[str]] | None = None, epochs: int = 3, lr: float = 1e-5,
                  weight_decay: float = 0.1, warmup_fraction: float = 0.1, device: str | torch.device = "cpu",
                  progress: bool = True, log=None) -> FinetuneResult:
    """Fine-tune CLIP's image tower and a head initialised from the zero-shot text weights (AdamW, cosine).

    ``class_names`` are prompt-ready names. The image tower of ``clip_model`` is trained
    in place. Keeps the epoch with the best validation accuracy (the last one without
    ``val_loader``). ``log``: an ``fgvc.train.loggers.ExperimentLog`` that receives each step's
    loss and lr and each epoch's history row.
    """
    device = torch.device(device)
    clip_model.to(device)
    head = zeroshot_weights(clip_model, tokenizer, class_names, templates, descriptions)
    scale = float(clip_model.logit_scale.detach().exp())
    model = ClipClassifier(clip_model, head * scale, class_names).to(device).float()
    zeroshot_state = _cpu_state(model)

    # no weight decay on gains, biases and embeddings' 1-d parameters, as in CLIP's own training
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    total = max(1, epochs * len(train_loader))
    warmup = int(warmup_fraction * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
    )
    # fp16 gradients need loss scaling; bf16 (the default where supported) does not
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())

    result = FinetuneResult(model, zeroshot_state, zeroshot_state)
    best_val, seen, train_seconds, step = -1.0, 0, 0.0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        t0, loss_sum, correct, n = time.perf_counter(), 0.0, 0, 0
        for batch in tqdm(train_loader, desc=f"fine-tune epoch {epoch}/{epochs}", disable=not progress, leave=False):
            x, y = batch[0].to(device, non_blocking=True), torch.as_tensor(batch[1]).to(device)
            with autocast(device):
                logits = model(x).float()
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            lr_used = opt.param_groups[0]["lr"]  # before the schedule moves on: the rate this step trained at
            sched.step()
            step += 1
            if log is not None:
                log.log_step(step, loss.detach(), lr_used)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            n += len(y)
        train_seconds += time.perf_counter() - t0
        seen += n
        row = {"epoch": epoch, "train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1),
               "lr": lr_used}  # the epoch's last step (the schedule steps per batch)
        if val_loader is not None:
            val = evaluate_classifier(model, val_loader, device)
            row.update(val_acc=val["acc"], val_loss=val["loss"])
        result.history.append(row)
        if log is not None:
            log.log_epoch(epoch, row)
        score = row.get("val_acc", epoch)  # without validation the last epoch wins
        if score > best_val:
            best_val, result.best_epoch = score, epoch
            result.finetuned_state = _cpu_state(model)
    model.load_state_dict(result.finetuned_state)
    result.train_images_per_second = seen / train_seconds if train_seconds else 0.0
    return result


def wise_ft(zeroshot_state: dict, finetuned_state: dict, alpha: float) -> dict:
    """Weights ``(1 - alpha) * zero-shot + alpha * fine-tuned`` (alpha in [0, 1]); integer buffers from fine-tuned."""
    return {
        k: torch.lerp(zeroshot_state[k], v, alpha) if v.is_floating_point() else v
        for k, v in finetuned_state.items()
    }


def wise_ft_curve(model: torch.nn.Module, zeroshot_state: dict, finetuned_state: dict, loader: DataLoader,
                  alphas=ALPHAS, device: str | torch.device = "cpu") -> list[dict]:
    """Accuracy along the WiSE-FT path, one row per alpha; leaves ``model`` with the fine-tuned weights."""
    rows = []
    for alpha in alphas:
        model.load_state_dict(wise_ft(zeroshot_state, finetuned_state, float(alpha)))
        rows.append({"alpha": float(alpha), **evaluate_classifier(model, loader, device)})
    model.load_state_dict(finetuned_state)
    return rows


def run_finetune(model_name: str, pretrained: str | None, dataset_name: str, root: str | Path, out_dir: str | Path,
                 templates: str | list[str] = "seed", descriptions: str | Path | None = None, epochs: int = 3,
                 batch_size: int = 32, lr: float = 1e-5, weight_decay: float = 0.1, alphas=ALPHAS,
                 device: str = "auto", num_workers: int = 2, val_fraction: float = 0.1, seed: int = 0,
                 augment: bool = True, save_checkpoint: bool = True, weights_cache_dir: str | Path | None = None,
                 download: bool = True, progress: bool = True, loggers: str = "") -> dict:
    """Fine-tune a CLIP image tower on a dataset; write metrics.json, history.csv, wise_ft.csv (and weights).

    ``test_acc`` is the fine-tuned model (alpha = 1); ``wise_ft`` holds validation and test
    accuracy per alpha and ``wise_ft_alpha`` the alpha chosen on validation. ``loggers``:
    experiment logs under ``out_dir/logs/`` (``"csv,tensorboard"``; see fgvc.train.loggers).
    """
    from fgvc.data import build_dataset
    from fgvc.train.loggers import open_loggers, require_installed

    if epochs < 1:
        raise UserError(f"epochs={epochs} trains nothing; use at least 1 (zero-shot accuracy: fgvc zeroshot)")
    require_installed(loggers, key="--loggers")
    start = time.perf_counter()
    torch.manual_seed(seed)
    template_list = resolve_templates(templates)
    description_map = load_descriptions(descriptions) if descriptions else None
    device = resolve_device(device)
    clip_model, preprocess, tokenizer = load_clip(model_name, pretrained, device=device,
                                                  cache_dir=weights_cache_dir, download=download)
    size = image_size(clip_model)
    common = {"val_fraction": val_fraction, "seed": seed}
    train_set = build_dataset(dataset_name, root, "train", train_transform(size) if augment else preprocess, **common)
    val_set = build_dataset(dataset_name, root, "val", preprocess, **common)
    test_set = build_dataset(dataset_name, root, "test", preprocess, **common)
    names = prompt_names(train_set.class_names, dataset_name)
    per_class = match_descriptions(description_map, train_set.class_names, dataset_name) if description_map else None

    def loader(ds, shuffle):
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                          pin_memory=device.type == "cuda", drop_last=shuffle and len(ds) > batch_size,
                          generator=torch.Generator().manual_seed(seed) if shuffle else None)

    val_loader = loader(val_set, False) if len(val_set) else None
    test_loader = loader(test_set, False)
    with open_loggers(loggers, Path(out_dir).expanduser(), main=True, key="--loggers") as log:
        log.log_hparams({"task": "clip_finetune", "model": model_name, "pretrained": str(pretrained),
                         "data": dataset_name, "root": str(root), "templates": template_list, "epochs": epochs,
                         "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
                         "val_fraction": val_fraction, "augment": augment, "device": str(device)})
        result = finetune_clip(clip_model, tokenizer, names, template_list, loader(train_set, True), val_loader,
                               descriptions=per_class, epochs=epochs, lr=lr, weight_decay=weight_decay,
                               device=device, progress=progress, log=log)
    model = result.model
    curve_test = wise_ft_curve(model, result.zeroshot_state, result.finetuned_state, test_loader, alphas, device)
    curve_val = (wise_ft_curve(model, result.zeroshot_state, result.finetuned_state, val_loader, alphas, device)
                 if val_loader else [{"acc": None, "loss": None}] * len(curve_test))
    curve = [{"alpha": t["alpha"], "val_acc": v["acc"], "test_acc": t["acc"], "test_top5": t["top5"]}
             for v, t in zip(curve_val, curve_test)]
    chosen = max(curve, key=lambda r: (r["val_acc"] or 0.0, r["alpha"]))
    final = evaluate_classifier(model, test_loader, device)
    best = result.history[result.best_epoch - 1] if result.best_epoch else result.history[-1]
    params = list(model.parameters())
    metrics = {
        "task": "clip_finetune",
        "train_acc": best["train_acc"], "val_acc": best.get("val_acc"), "test_acc": final["acc"],
        "test_top5": final["top5"], "train_loss": best["train_loss"], "val_loss": best.get("val_loss"),
        "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "seconds": time.perf_counter() - start, "train_images_per_second": result.train_images_per_second,
        "params_total": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
        "zeroshot_test_acc": next((r["test_acc"] for r in curve if r["alpha"] == 0.0), None),
        "wise_ft": curve, "wise_ft_alpha": chosen["alpha"], "wise_ft_test_acc": chosen["test_acc"],
        "model": model_name, "pretrained": str(pretrained), "data": dataset_name, "image_size": size,
        "templates": template_list, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
        "batch_size": batch_size, "device": str(device),
    }
    out = Path(out_dir).expanduser()
    keys = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    outputs.write_csv(out / "history.csv", keys, [[r.get(k, "") for k in keys] for r in result.history])
    outputs.write_csv(out / "wise_ft.csv", ["alpha", "val_acc", "test_acc", "test_top5"],
                      [[r["alpha"], r["val_acc"], r["test_acc"], r["test_top5"]] for r in curve])
    if save_checkpoint:
        outputs.save_tensors(out / "checkpoints" / "clip_finetuned.safetensors", result.finetuned_state,
                             metadata={"model": model_name, "pretrained": str(pretrained),
                                       "class_names": "\n".join(train_set.class_names)})
    outputs.write_json(out / "metrics.json", metrics)  # last: its presence marks a finished run
    return metrics
