"""What ``fgvc weights`` does with a pretrained network's file: ``import_tflite`` (``fgvc weights import``:
a TensorFlow Lite file -> safetensors fgvc and timm load, checked against the float graph) and
``run_label_match`` (``fgvc weights zeroshot``: the file's own head scored on a dataset by label matching).
The formats themselves are read by ``fgvc.models.tflite``, ``fgvc.models.weights`` and
``fgvc.models.labelmatch``; these two write folders, so they sit above them with the other analyses.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch.utils.data import DataLoader
from tqdm import tqdm

from fgvc import runs
from fgvc.data import build_dataset
from fgvc.data.transforms import eval_transform
from fgvc.errors import UserError
from fgvc.models import tflite
from fgvc.models.factory import TF_PORTS, create_model
from fgvc.models.labelmatch import label_match_accuracy, match_classes, read_labels
from fgvc.models.weights import load_weights_file
from fgvc.protocol import run_protocol


def import_tflite(path: str | Path, out: str | Path, model_name: str = "tf_mobilenetv2_100",
                  labels: str | Path | None = None) -> Path:
    """Write ``out/<stem>.safetensors`` (timm key names, with mean/std and the folded-BatchNorm mark in
    its metadata, so ``model.weights=`` and ``timm.create_model(..., pad_type='same')`` both load it)
    and ``out/<stem>.json`` (model, outputs, normalisation, source sha256, the check against the
    float graph, labels). Returns the safetensors path."""
    path = Path(path).expanduser()
    model = create_model(model_name, tflite.num_classes(path))
    origin = load_weights_file(model, path)
    mean, std = tflite.input_normalization(path)
    # the check: the imported model against the graph run op by op, on smooth random images
    x = F.interpolate(torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)), size=224,
                      mode="bilinear", align_corners=False)
    with torch.no_grad():
        diff = float((model.eval()(x) - tflite.reference_forward(path, x)).abs().max())
    out = Path(out).expanduser()
    stem = path.stem
    meta = {"mean": json.dumps(mean), "std": json.dumps(std), "fgvc.batchnorm": "folded", "fgvc.model": model_name,
            "source": path.name, "source_sha256": origin["sha256"]}
    tensors = {k: v.contiguous() for k, v in model.net.state_dict().items()}
    weights_file = out / f"{stem}.safetensors"
    runs.write_bytes_atomic(weights_file, save(tensors, metadata=meta))
    timm_name, timm_kwargs = TF_PORTS[model_name]
    info = {"model": model_name, "timm_model": timm_name, "timm_kwargs": timm_kwargs,
            "num_classes": tflite.num_classes(path), "input_size": 224, "mean": mean, "std": std,
            "batchnorm": "folded into the convolution biases (mean 0, variance 1 - eps)",
            "source": {"file": path.name, "sha256": origin["sha256"]},
            "max_abs_logit_difference_to_the_float_graph": diff}
    if labels:
        info["labels"] = read_labels(labels)
    runs.write_json_atomic(out / f"{stem}.json", info)
    return weights_file


def run_label_match(weights: str | Path, labels: str | Path, dataset_name: str, root: str | Path, out: str | Path,
                    model_name: str = "tf_mobilenetv2_100", split: str = "test", image_size: int = 224,
                    batch_size: int = 64, progress: bool = True) -> dict:
    """Score the classifier in ``weights`` (its own head) on ``split`` of a dataset by label matching;
    writes ``out/metrics.json`` (task ``label_match``) with the matched class -> label pairs."""
    label_list = read_labels(labels)
    outputs = tflite.num_classes(weights) if str(weights).endswith(".tflite") else len(label_list)
    if outputs != len(label_list):
        raise UserError(f"{labels} has {len(label_list)} labels but {weights} has {outputs} outputs; "
                        "give the labels file that belongs to these weights")
    dataset = build_dataset(dataset_name, root, split, eval_transform(image_size))
    mapping = match_classes(dataset.class_names, label_list)
    model = create_model(model_name, outputs)
    origin = load_weights_file(model, weights)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0)
    scores = label_match_accuracy(model, tqdm(loader, desc=f"label match ({split})", leave=False,
                                              disable=not progress), mapping)
    metrics = {"task": "label_match", "model": model_name, "pretrained": {"source": "file", **{
        k: origin[k] for k in ("file", "sha256")}}, "dataset": dataset_name, "split": split,
        "dataset_classes": len(dataset.class_names), "image_size": image_size, **scores,
        "matches": {dataset.class_names[i]: label_list[j] for i, j in sorted(mapping.items())}}
    metrics["protocol"] = run_protocol("label_match", dataset_name, {split: len(dataset)},
                                       pretrained=metrics["pretrained"], device="cpu", transform=dataset.transform)
    out = Path(out)
    runs.write_json_atomic(out / "metrics.json", metrics)
    return metrics


__all__ = ["import_tflite", "run_label_match"]
