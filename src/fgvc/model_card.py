"""README.md of a ``fgvc export --format hf`` folder: what the model is and was trained on, its recipe and
metrics, the evaluation protocol, how to load it (timm, plain PyTorch, torchvision) and the check it passed."""

from __future__ import annotations

import json
from pathlib import Path

from fgvc import config as config_mod

_RECIPE_KEYS = ("model.name", "model.pretrained", "model.dropout", "model.trainable", "model.batchnorm",
                "model.output_stride", "data.name", "data.image_size", "data.crop_ratio", "data.val_fraction",
                "data.train_source", "train.epochs", "train.batch_size", "train.lr", "train.head_lr_scale",
                "train.weight_decay", "train.milestones", "train.gamma", "train.patience", "train.seed",
                "train.precision", "train.devices", "aug.geometric", "aug.random_crop", "aug.rotation", "aug.cutout",
                "aug.mixup_alpha", "aug.cutmix_alpha", "aug.label_smoothing", "adv.attack", "adv.eps",
                "adv.loss_weight")
_METRIC_KEYS = ("train_acc", "val_acc", "test_acc", "test_top5", "train_loss", "val_loss", "test_loss",
                "best_epoch", "epochs_run", "seconds", "train_images", "val_images", "test_images",
                "params_total", "precision", "device", "devices", "batchnorm")


def _fmt(v, exact: bool = False) -> str:
    if isinstance(v, float) and exact:  # a recipe value as given (lr 5e-05, not 0.0001)
        return f"{v:g}"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _pretraining(src) -> str:
    if not isinstance(src, dict) or not src:
        return "not recorded (run trained before fgvc recorded it)"
    kind = src.get("source")
    if kind == "file":
        return f"a local weights file `{src.get('file')}` (sha256 `{src.get('sha256') or 'not recorded'}`)"
    if kind == "run":
        return f"the backbone of another fgvc run (`{Path(str(src.get('run'))).name}`)"
    if kind in ("torchvision", "timm"):
        return f"{kind}'s ImageNet weights for `{src.get('name')}`"
    if kind == "scratch":
        return "none: trained from random initialisation"
    return json.dumps(src)


def model_card(cfg, metrics: dict, config: dict, run_dir: Path) -> str:
    """The card of run ``run_dir`` (``cfg`` its config, ``metrics`` its metrics.json) exported as ``config``
    (the folder's config.json)."""
    return _about(cfg, metrics, config, run_dir) + _loading(cfg.model.name, config)


def _about(cfg, metrics: dict, config: dict, run_dir: Path) -> str:
    """Front matter, model, data, recipe, metrics and preprocessing."""
    arch, pcfg = config["architecture"], config["pretrained_cfg"]
    classes, size = config["label_names"], pcfg["input_size"][-1]
    name = cfg.model.name
    prep = config["fgvc"]["preprocessing"]
    recipe = "\n".join(f"| `{k}` | {_fmt(config_mod.get(cfg, k), exact=True)} |" for k in _RECIPE_KEYS)
    scores = "\n".join(f"| {k} | {_fmt(metrics[k])} |" for k in _METRIC_KEYS if metrics.get(k) is not None)
    shown = ", ".join(f"`{c}`" for c in classes[:20]) + (f" ... ({len(classes)} in all)" if len(classes) > 20 else "")
    twin_note = (f"fgvc's `{name}` is torchvision's architecture; it is stored here as timm's `{arch}`, whose "
                 "layers are the same (tensor names mapped, logits checked equal)." if name != arch and
                 not name.startswith(arch) else f"timm architecture `{arch}`.")
    return f"""---
library_name: timm
pipeline_tag: image-classification
tags: [image-classification, timm, fgvc, fine-grained]
---

# {arch} fine-tuned on {cfg.data.name} ({len(classes)} classes)

Exported by `fgvc export --format hf` from fgvc run `{run_dir.name}` (checkpoint `{config['fgvc']['checkpoint']}`).
Model: {twin_note}

## Data

Dataset `{cfg.data.name}`: {len(classes)} classes ({shown}); {metrics.get('train_images', '?')} training,
{metrics.get('val_images', '?')} validation (a stratified {cfg.data.val_fraction:g} of train, seeded) and
{metrics.get('test_images', '?')} test images. The test split is never used to pick a checkpoint: the
best epoch is chosen by validation accuracy.

Pretraining (starting weights): {_pretraining(metrics.get('pretrained'))}.

## Recipe (from the run's config.yaml)

| key | value |
| --- | --- |
{recipe}

## Metrics (from the run's metrics.json)

| metric | value |
| --- | --- |
{scores or '| (no metrics.json: the run did not finish) | |'}

Accuracies are fractions in [0, 1], top-1 unless named top5, measured with the protocol below.

## Protocol: input and preprocessing

RGB images, {size}x{size}, evaluated as fgvc evaluates: {prep['steps']}; then normalise with
mean {pcfg['mean']} and std {pcfg['std']} (`pretrained_cfg` in config.json). The folder holds the bare
network, so the normalisation is yours to apply (as for any timm model). timm's own eval
transform (`timm.data.create_transform(**timm.data.resolve_data_config(model=model), is_training=False)`)
resizes the shorter side to the same {prep['resize_shorter_side']} px and crops the same centre, with PIL's
bilinear resize instead of torchvision's, so its pixels differ slightly; use the snippet below for fgvc's numbers.

"""


def _loading(name: str, config: dict) -> str:
    """How to load the folder (timm, plain PyTorch with fgvc's preprocessing, torchvision) and the check."""
    arch, args, classes = config["architecture"], config["model_args"], config["label_names"]
    check = config["fgvc"]["verification"]
    kwargs = "".join(f", {k}={v!r}" for k, v in args.items() if k != "num_classes")
    torchvision = ""
    if name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext101_32x8d"):
        stride = args.get("output_stride", 32)  # model.output_stride: torchvision dilates the same stages
        dilate = f", replace_stride_with_dilation=[False, {stride == 8}, {stride < 32}]" \
            if stride != 32 else ""
        torchvision = f"""
Without timm, torchvision's `{name}` takes the same file (timm's ResNet names are torchvision's):

```python
import torchvision
from safetensors.torch import load_file
model = torchvision.models.{name}(num_classes={len(classes)}{dilate})
model.load_state_dict(load_file("model.safetensors")); model.eval()
```
"""
    return f"""## Loading

timm, offline, from this folder:

```python
import timm
model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()
```

or with timm's architecture name and the weights file (give `num_classes` in the overlay too,
or timm drops the classifier as one of another size):

```python
model = timm.create_model("{arch}", pretrained=True, num_classes={len(classes)}{kwargs},
                          pretrained_cfg_overlay=dict(file="model.safetensors", num_classes={len(classes)})).eval()
```

Plain PyTorch (a `torch.nn.Module` built by timm with no weights, then `load_state_dict`),
with fgvc's preprocessing, run in this folder:

```python
import json, timm, torch
from PIL import Image, ImageOps
from safetensors.torch import load_file
from torchvision.transforms.v2.functional import center_crop, normalize, pil_to_tensor, resize, to_dtype

config = json.load(open("config.json"))
p, prep = config["pretrained_cfg"], config["fgvc"]["preprocessing"]
model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
model.load_state_dict(load_file("model.safetensors")); model.eval()

def decode(path):
    im = Image.open(path)
    if im.format == "JPEG":  # decode at a reduced DCT scale, as fgvc does
        im.draft("RGB", (prep["jpeg_decode_min_side"],) * 2)
    im = ImageOps.exif_transpose(im)  # the camera's orientation
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
    return im.convert("RGB")

def preprocess(path):
    x = resize(pil_to_tensor(decode(path)), prep["resize_shorter_side"], antialias=True)
    x = to_dtype(center_crop(x, prep["center_crop"]), torch.float32, scale=True)  # [0, 1]
    return normalize(x, p["mean"], p["std"])[None]

with torch.no_grad():
    logits = model(preprocess("bird.jpg"))
print(config["label_names"][logits.argmax(1).item()])
```
{torchvision}
## Check

Before this folder was written, timm loaded it (`local-dir:`) and its logits on fixed random
inputs (batches {', '.join(map(str, check['batches']))}) differed from the fgvc model's by at most
{check['max_abs_diff']:.2g} (tolerance {check['tolerance']:g}).
"""


__all__ = ["model_card"]
