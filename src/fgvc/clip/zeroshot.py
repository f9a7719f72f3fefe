"""CLIP zero-shot classification: text-derived class weights, cached image embeddings, metrics."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fgvc.clip import outputs
from fgvc.clip.models import ClipImageEncoder, autocast, image_size, load_clip, preprocess_cfg
from fgvc.clip.prompts import (
    check_prompt_lengths,
    class_prompts,
    load_descriptions,
    match_descriptions,
    prompt_names,
    resolve_templates,
)
from fgvc.devices import resolve_device
from fgvc.errors import UserError
from fgvc.metrics import class_report, confusion_matrix


@torch.no_grad()
def zeroshot_weights(clip_model, tokenizer, class_names: list[str], templates: list[str] | str,
                     descriptions: list[list[str]] | None = None, batch_size: int = 256) -> torch.Tensor:
    """(C, D) class weights, rows unit norm: the normalised mean of each class's normalised prompt embeddings
    (prompt ensembling, Radford et al. 2021, CLIP §3.1.4); C = len(class_names), D the width of the
    joint image-text embedding (512 for ViT-B/32). Scores are unit image features @ weights.T (cosines).

    ``templates``: a list of strings with one ``{}``, or the name of a shipped set
    (fgvc.clip.prompts). ``class_names`` are used as written (clean them first);
    ``descriptions[c]`` adds extra prompts for class c, averaged with the templated ones.
    UserError for an unknown template set or a prompt longer than the tokenizer's context
    (it would be cut silently).
    """
    if not isinstance(templates, list):
        templates = resolve_templates(templates)
    check_prompt_lengths(tokenizer, class_names, templates, descriptions)  # the tokenizer cuts without a word
    per_class = [class_prompts(name, templates, descriptions[c] if descriptions else None)
                 for c, name in enumerate(class_names)]
    flat = [p for prompts in per_class for p in prompts]
    device = next(clip_model.parameters()).device
    chunks = []
    for i in range(0, len(flat), batch_size):
        tokens = tokenizer(flat[i:i + batch_size]).to(device)
        with autocast(device):
            chunks.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1))
    embeddings = torch.cat(chunks).split([len(p) for p in per_class])
    return F.normalize(torch.stack([e.mean(0) for e in embeddings]), dim=-1)


def load_cached_embeddings(cache_path: str | Path | None, num_images: int, key: str | None = None):
    """``(embeddings, labels)`` from a cache file holding exactly ``num_images`` rows and written for
    ``key`` (see ``cache_key``), else None."""
    if not cache_path or not Path(cache_path).is_file():
        return None
    try:
        with safe_open(str(cache_path), framework="pt") as f:
            written_for = (f.metadata() or {}).get("key")
        tensors = outputs.load_tensors(cache_path)
    except Exception:  # noqa: BLE001 -- a truncated or foreign file is a cache miss, re-encoded below
        return None
    if key is not None and written_for != key:
        return None  # an image, the model or the preprocessing changed since the cache was written
    if tensors.get("labels") is None or len(tensors["labels"]) != num_images:
        return None  # the dataset changed since the cache was written
    return tensors["embeddings"], tensors["labels"]


@torch.no_grad()
def encode_images(clip_model, loader: DataLoader, device: str | torch.device = "cpu",
                  cache_path: str | Path | None = None, progress: bool = True, key: str | None = None):
    """``(embeddings (N, D) float32 unit norm, labels (N,))`` for images in [0, 1]; reuses ``cache_path``.

    The cache answers only when it was written for ``key`` (default: ``cache_key`` of the
    loader's dataset and the model's preprocessing; the caller's path names the model).
    """
    if cache_path and key is None:
        key = cache_key(loader.dataset, clip_model)
    cached = load_cached_embeddings(cache_path, len(loader.dataset), key)
    if cached is not None:
        return cached
    device = torch.device(device)
    encoder = ClipImageEncoder(clip_model).to(device).eval()
    embeddings, labels = [], []
    for batch in tqdm(loader, desc="encoding images", unit="batch", disable=not progress, leave=False):
        x, y = batch[0], batch[1]
        with autocast(device):
            embeddings.append(encoder(x.to(device, non_blocking=True)).float().cpu())
        labels.append(torch.as_tensor(y).long().cpu())
    embeddings, labels = torch.cat(embeddings), torch.cat(labels)
    if cache_path:
        outputs.save_tensors(cache_path, {"embeddings": embeddings, "labels": labels},
                             metadata={"key": key} if key else None)
    return embeddings, labels


def evaluate(image_emb: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
             class_names: list[str], top_pairs: int = 20) -> dict:
    """Top-1, top-5, mean per-class accuracy (fractions), per-class accuracy and the most-confused pairs.

    ``confusions`` lists every (true, predicted) pair with errors, most frequent first;
    ``rate`` is the fraction of the true class's images given that wrong label.
    """
    emb = F.normalize(image_emb.float().cpu(), dim=-1)
    w = F.normalize(weights.float().cpu(), dim=-1)
    labels = torch.as_tensor(labels).long().cpu()
    num_classes = w.shape[0]
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"label {int(labels.max())} out of range for {num_classes} classes")
    topk = (emb @ w.T).topk(min(5, num_classes), dim=1).indices
    pred = topk[:, 0]
    report = class_report(confusion_matrix(labels, pred, num_classes), class_names, top_pairs)
    n = max(len(labels), 1)
    return {
        "top1": float((pred == labels).sum()) / n,
        "top5": float((topk == labels[:, None]).any(1).sum()) / n,
        "n_images": len(labels),
        "n_classes": num_classes,
        **report,
    }


def dataset_fingerprint(dataset) -> str:
    """A hash of the dataset's (path, label) list, or of its size and classes when it has no samples."""
    h = hashlib.sha1()
    samples = getattr(dataset, "samples", None)
    if samples:
        for path, label in _paths_and_labels(samples):
            h.update(f"{path}\t{label}\n".encode())
    else:
        h.update(f"{len(dataset)}\t{getattr(dataset, 'class_names', '')}".encode())
    return h.hexdigest()[:12]


def _paths_and_labels(samples):
    for s in samples:
        yield (s.path, s.label) if hasattr(s, "path") else (s[0], s[1])


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # object addresses in a repr differ between processes


def cache_key(dataset, clip_model, model_name: str | None = None, pretrained: str | None = None) -> str:
    """A hash of everything cached embeddings depend on: each image file's path, label, size and
    modification times (a file rewritten in place changes them), the model and its weights file,
    the dataset's transform and decode size, and the model's normalisation."""
    h = hashlib.sha256()
    h.update(json.dumps({
        "model": model_name, "pretrained": _weights_tag(pretrained),
        "transform": _ADDRESS.sub("", repr(getattr(dataset, "transform", None))),
        "decode_min_side": getattr(dataset, "decode_min_side", None),
        "preprocess": preprocess_cfg(clip_model),
        "n": len(dataset), "classes": list(getattr(dataset, "class_names", []) or []),
    }, sort_keys=True, default=str).encode())
    for path, label in _paths_and_labels(getattr(dataset, "samples", None) or []):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        except (OSError, TypeError, ValueError):
            stamp = "-"  # an in-memory sample (no file): its path and label are all there is
        h.update(f"{path}\t{label}\t{stamp}\n".encode())
    return h.hexdigest()


def _weights_tag(pretrained: str | None) -> str:
    """A pretrained tag, or for a weights file its resolved path, size and modification time."""
    tag = str(pretrained)
    p = Path(tag).expanduser()
    if p.is_file():  # a weights file may be overwritten in place: key on its size and time too
        stat = p.stat()
        tag = f"{p.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return tag


def embedding_cache_path(cache_dir: str | Path, model_name: str, pretrained: str | None, dataset_name: str,
                         split: str, size: int, fingerprint: str) -> Path:
    """One file per (model, pretrained, dataset, split, image size, image list); the file also records
    its ``cache_key``, so rewritten images, weights or preprocessing are re-encoded into it."""
    name = "__".join([outputs.slug(model_name), outputs.slug(_weights_tag(pretrained)), outputs.slug(dataset_name),
                      split, f"{size}px", fingerprint])
    return Path(cache_dir).expanduser() / "clip-embeddings" / f"{name}.safetensors"


def encode_split(clip_model, preprocess, model_name: str, pretrained: str | None, dataset_name: str,
                 root: str | Path, split: str, device: torch.device, batch_size: int = 64, num_workers: int = 2,
                 cache_dir: str | Path | None = None, use_cache: bool = True, val_fraction: float = 0.1,
                 seed: int = 0, progress: bool = True):
    """``(embeddings, labels, dataset, encode_seconds)`` for one split; seconds is 0 when the cache answered."""
    from fgvc.data import build_dataset  # the data package imports heavy readers; load it only here

    dataset = build_dataset(dataset_name, root, split, transform=preprocess, val_fraction=val_fraction, seed=seed)
    if len(dataset) == 0:
        raise UserError(f"the {split} split of {dataset_name} under {root} has no images; check the dataset root"
                        + (" and val_fraction" if split == "val" else ""))
    cache_path = key = None
    if use_cache:
        cache_path = embedding_cache_path(cache_dir or outputs.default_cache_dir(), model_name, pretrained,
                                          dataset_name, split, image_size(clip_model), dataset_fingerprint(dataset))
        key = cache_key(dataset, clip_model, model_name, pretrained)
    cached = load_cached_embeddings(cache_path, len(dataset), key)
    if cached is not None:
        return *cached, dataset, 0.0
    t0 = time.perf_counter()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    emb, labels = encode_images(clip_model, loader, device, cache_path=cache_path, progress=progress, key=key)
    return emb, labels, dataset, time.perf_counter() - t0


def run_zeroshot(model_name: str, pretrained: str | None, dataset_name: str, root: str | Path,
                 out_dir: str | Path, split: str = "test", templates: str | list[str] = "seed",
                 descriptions: str | Path | None = None, batch_size: int = 64, device: str = "auto",
                 num_workers: int = 2, cache_dir: str | Path | None = None, use_cache: bool = True,
                 weights_cache_dir: str | Path | None = None, download: bool = True,
                 val_fraction: float = 0.1, seed: int = 0, top_pairs: int = 20, progress: bool = True) -> dict:
    """Zero-shot classify ``split`` of a dataset; writes metrics.json, per_class.csv, confusions.csv to out_dir.

    ``templates``: a set name from ``TEMPLATES`` (``+`` joins sets), a text file, or one
    template with ``{}``. ``descriptions``: optional JSON ``{class: [sentences]}``. Image
    embeddings are cached under ``cache_dir`` (default ``~/.cache/fgvc``) so other prompts
    reuse them; the cache answers only while every image file (size, modification times), the
    model, its weights and the preprocessing are those it was written for (``cache_key``). ``weights_cache_dir`` overrides open_clip's weights cache. Returns the metrics.
    """
    start = time.perf_counter()
    template_list = resolve_templates(templates)  # fail on a bad template before loading anything heavy
    description_map = load_descriptions(descriptions) if descriptions else None
    device = resolve_device(device)
    model, preprocess, tokenizer = load_clip(model_name, pretrained, device=device,
                                             cache_dir=weights_cache_dir, download=download)
    size = image_size(model)
    image_emb, labels, dataset, encode_seconds = encode_split(
        model, preprocess, model_name, pretrained, dataset_name, root, split, device=device,
        batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, use_cache=use_cache,
        val_fraction=val_fraction, seed=seed, progress=progress)
    names = prompt_names(dataset.class_names, dataset_name)
    per_class_desc = match_descriptions(description_map, dataset.class_names, dataset_name) if description_map else None
    weights = zeroshot_weights(model, tokenizer, names, template_list, per_class_desc)
    result = evaluate(image_emb, labels, weights, dataset.class_names, top_pairs=top_pairs)

    metrics = {
        "task": "zeroshot",
        f"{split}_acc": result["top1"],
        f"{split}_top5": result["top5"],
        f"{split}_mean_class_acc": result["mean_class_acc"],
        "model": model_name,
        "pretrained": str(pretrained),
        "data": dataset_name,
        "split": split,
        "image_size": size,
        "templates": template_list,
        "descriptions": str(descriptions) if descriptions else None,
        "classes_with_descriptions": sum(bool(d) for d in per_class_desc) if per_class_desc else 0,
        "n_images": result["n_images"],
        "n_classes": result["n_classes"],
        "embeddings_cached": encode_seconds == 0.0,
        "encode_seconds": encode_seconds,
        "encode_images_per_second": (len(labels) / encode_seconds) if encode_seconds else None,
        "seconds": time.perf_counter() - start,
        "device": str(device),
        "per_class_acc": result["per_class_acc"],
        "top_confusions": result["top_confusions"],
    }
    write_outputs(out_dir, metrics, result)
    return metrics


def write_outputs(out_dir: str | Path, metrics: dict, result: dict) -> None:
    """per_class.csv, confusions.csv, then metrics.json (last, so its presence means a finished run)."""
    out = Path(out_dir).expanduser()
    outputs.write_csv(out / "per_class.csv", ["class", "images", "accuracy"],
                      [[name, result["per_class_n"][name], "" if acc is None else f"{acc:.6f}"]
                       for name, acc in result["per_class_acc"].items()])
    outputs.write_csv(out / "confusions.csv", ["true", "predicted", "count", "rate"],
                      [[c["true"], c["predicted"], c["count"], f"{c['rate']:.6f}"] for c in result["confusions"]])
    outputs.write_json(out / "metrics.json", metrics)
