"""``fgvc export RUN --format hf``: a Hugging Face / timm model folder that loads without fgvc.

The folder holds ``config.json`` (timm's hub schema: ``architecture``, ``num_classes``,
``label_names``, ``model_args``, ``pretrained_cfg`` with input size, mean/std, crop ratio and
interpolation), ``model.safetensors`` with timm's key names, and a ``README.md`` model card.
fgvc's ``Classifier`` wraps the network as ``.net`` behind a ``.normalize`` layer; the folder
holds the bare timm network, so the mean/std move into ``config.json`` and the user
normalises (as with any timm model). fgvc's models built from torchvision names are written
as their timm twins: timm's ResNet / ResNeXt keys are torchvision's (only fgvc's head
``fc.1`` becomes ``fc``), and torchvision's ViT-B/16 and ViT-L/16 are renamed to timm's
``vit_base_patch16_224`` / ``vit_large_patch16_224`` (same layers, same order).

The staged folder is loaded back by timm itself (``timm.create_model("local-dir:...")``) and
its logits on fixed random normalised batches must equal fgvc's within ``tolerance`` before
the folder is renamed into place; a failure leaves an existing folder as it was.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from fgvc import api, runs
from fgvc.data.transforms import eval_preprocessing, resize_side
from fgvc.errors import UserError
from fgvc.model_card import model_card
from fgvc.models.factory import TF_PORTS, TORCHVISION_MODELS, is_clip, takes_img_size

FILES = ("config.json", "model.safetensors", "README.md")
CHECK_BATCHES = (1, 3)
# fgvc's torchvision names -> timm architecture with the same layers (keys renamed by _vit_keys for ViTs)
TORCHVISION_TWINS = {
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101",
    "resnet152": "resnet152", "resnext101_32x8d": "resnext101_32x8d",
    "vit_b_16": "vit_base_patch16_224", "vit_l_16": "vit_large_patch16_224",
}
# source-checkpoint facts timm's pretrained_cfg carries that do not describe the fine-tuned weights
_NOT_OURS = ("tag", "hf_hub_id", "hf_hub_filename", "url", "file", "source", "license", "origin_url", "paper_ids",
             "paper_name", "notes", "label_offset", "label_names", "label_descriptions", "test_input_size",
             "test_crop_pct", "test_pool_size", "pool_size", "state_dict", "custom_load")


def twin(model: nn.Module, image_size: int) -> tuple[str, dict, dict]:
    """``(timm architecture, model_args, state_dict with timm's keys)`` of an fgvc Classifier; a model built
    with model.output_stride below 32 passes it on (timm dilates the same stages)."""
    arch, args, state = _twin(model, image_size)
    stride = getattr(model, "output_stride", 32)
    return arch, {**args, **({"output_stride": stride} if stride != 32 else {})}, state


def _twin(model: nn.Module, image_size: int) -> tuple[str, dict, dict]:
    name, num_classes = model.name, model.head.out_features
    state = {k: v.detach().clone().contiguous() for k, v in model.net.state_dict().items()}
    if name in TORCHVISION_MODELS:
        arch = TORCHVISION_TWINS.get(name)
        if arch is None:
            raise UserError(f"{name} has no timm architecture with the same layers; export it with "
                            "--format pt2 or onnx instead")
        if name.startswith("vit"):
            return arch, {"num_classes": num_classes, "img_size": image_size}, _vit_keys(state)
        state = {("fc." + k[len("fc.1."):] if k.startswith("fc.1.") else k): v for k, v in state.items()}
        return arch, {"num_classes": num_classes}, state
    if name in TF_PORTS:
        arch, extra = TF_PORTS[name]
        return arch, {"num_classes": num_classes, **extra}, state
    args = {"num_classes": num_classes}
    if takes_img_size(type(model.net)):  # as fgvc built it (fgvc.models.factory._timm_model)
        args["img_size"] = image_size
    return name.split(".")[0], args, state


def _vit_keys(state: dict) -> dict:
    """torchvision VisionTransformer keys (fgvc head ``heads.1``) -> timm VisionTransformer keys."""
    fixed = {"conv_proj.weight": "patch_embed.proj.weight", "conv_proj.bias": "patch_embed.proj.bias",
             "class_token": "cls_token", "encoder.pos_embedding": "pos_embed", "encoder.ln.weight": "norm.weight",
             "encoder.ln.bias": "norm.bias", "heads.1.weight": "head.weight", "heads.1.bias": "head.bias"}
    inner = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
             "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
             "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
    out = {}
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
            continue
        m = re.fullmatch(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)", key)
        if not m:
            raise UserError(f"torchvision ViT tensor {key!r} has no timm name; export with --format pt2 instead")
        block, rest = m.groups()
        for src, dst in inner.items():
            if rest == src or rest.startswith(src + "."):
                out[f"blocks.{block}.{dst}{rest[len(src):]}"] = value
                break
        else:
            raise UserError(f"torchvision ViT tensor {key!r} has no timm name; export with --format pt2 instead")
    return out


def crop_pct(size: int, crop_ratio: float) -> float:
    """The crop ratio whose ``floor(size / crop_pct)`` (timm's eval resize) is fgvc's resize side at the run's
    ``crop_ratio`` (data.crop_ratio): ``crop_ratio`` itself, nudged down where float rounding would differ."""
    side = resize_side(size, crop_ratio)
    pct = size / side
    while math.floor(size / pct) != side:  # float rounding just below the integer
        pct = math.nextafter(pct, 0.0)
    return pct


def build_config(arch: str, model_args: dict, net: nn.Module, classes: list[str], mean, std, size: int,
                 fgvc_info: dict, crop_ratio: float) -> dict:
    """config.json in timm's hub schema (what ``timm.models.push_to_hf_hub`` writes), plus an ``fgvc`` block."""
    source_cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    pretrained_cfg = {k: v for k, v in source_cfg.items() if k not in _NOT_OURS and v is not None}
    pretrained_cfg.update({
        "input_size": [3, size, size], "interpolation": "bilinear", "crop_pct": crop_pct(size, crop_ratio),
        "crop_mode": "center", "mean": list(mean), "std": list(std), "num_classes": len(classes),
        "custom_load": False,
    })
    config = {"architecture": arch, "num_classes": len(classes)}
    if getattr(net, "num_features", None):
        config["num_features"] = int(net.num_features)
    if isinstance(getattr(net, "global_pool", None), str):
        config["global_pool"] = net.global_pool
    config.update({"label_names": list(classes), "model_args": model_args, "pretrained_cfg": pretrained_cfg,
                   "fgvc": fgvc_info})
    return config


def export_hf(run_dir: str | Path, out: str | Path | None = None, tolerance: float = 1e-3,
              checkpoint: str = "best") -> Path:
    """Write ``out`` (default ``RUN_DIR/export/hf``), checked by loading it back with timm; return the folder."""
    import timm
    from safetensors.torch import save as save_safetensors

    if not tolerance > 0:
        raise UserError(f"--tolerance must be a positive number, got {tolerance}")
    run = api.Run(run_dir)
    run_dir = run.dir
    out = Path(out).expanduser() if out is not None else run_dir / "export" / "hf"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; --format hf writes a folder, pass a folder name")
    if out.is_dir() and any(out.iterdir()) and not _is_hf_export(out):
        raise UserError(f"--out {out} is a folder with other files in it; pass a new or empty folder "
                        "(an earlier hf export there is replaced)")
    if is_clip(run.config.model.name):  # open_clip towers have no timm twin that loads this state
        raise UserError(f"{run.dir} is a CLIP run ({run.config.model.name}): --format hf writes timm folders, which "
                        "cannot hold its open_clip image tower; export with --format onnx or pt2 instead")
    if run.config.method.name != "plain":  # a timm model has the backbone's own head only
        raise UserError(f"{run.dir} trained method.name={run.config.method.name}: --format hf writes timm folders, "
                        "which have no place for the method's head and inference; export with --format onnx, pt2 or torchscript")
    model, classes, cfg, metrics, size = run.model(checkpoint), run.class_names, run.config, run.metrics, run.image_size
    arch, model_args, state = twin(model, size)
    mean = [round(v, 6) for v in model.normalize.mean.flatten().tolist()]
    std = [round(v, 6) for v in model.normalize.std.flatten().tolist()]
    unchanged = f"nothing was written (the previous {out.name}, if any, is unchanged)"

    # the twin first: a key or shape timm does not expect is a clear refusal, before anything is written
    try:
        net = timm.create_model(arch, pretrained=False, **model_args)
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        raise UserError(f"{cfg.model.name}'s weights do not fit timm's {arch} ({_one_line(e)}); "
                        f"export with --format pt2 or onnx instead; {unchanged}") from None

    tmp = runs.staging_dir(out)
    old = None
    try:
        try:
            (tmp / "model.safetensors").write_bytes(save_safetensors(state, metadata={"format": "pt"}))
            # the run folder's name only: the folder is made to be shared, a path of this machine is not
            info = {"model": cfg.model.name, "run": run_dir.resolve().name, "checkpoint": checkpoint,
                    "preprocessing": eval_preprocessing(size, run.crop_ratio), "torch_version": torch.__version__,
                    "timm_version": timm.__version__}
            config = build_config(arch, model_args, net, classes, mean, std, size, info, run.crop_ratio)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {out} ({e.strerror or e.__class__.__name__}); free disk space or "
                            f"fix the folder's permissions; {unchanged}") from None
        diff = _check(model, tmp, size, len(classes), tolerance, f"hf export of {run_dir}", unchanged)
        config["fgvc"]["verification"] = {
            "max_abs_diff": diff, "tolerance": tolerance, "batches": list(CHECK_BATCHES),
            "how": "timm.create_model('local-dir:FOLDER', pretrained=True) on (x - mean) / std vs the fgvc "
                   "model on x, x = torch.rand with fixed seeds"}
        try:
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            (tmp / "README.md").write_text(model_card(cfg, metrics, config, run_dir), encoding="utf-8")
            if out.is_dir():  # the previous export (or an empty folder) steps aside, then the new one moves in
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
                os.replace(out, old / "x")
            os.replace(tmp, out)
        except OSError as e:
            if old is not None and (old / "x").exists() and not out.exists():
                os.replace(old / "x", out)
            raise UserError(f"cannot write {out} ({e.strerror or e.__class__.__name__}); free disk space or "
                            f"fix the folder's permissions") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def _is_hf_export(folder: Path) -> bool:
    try:
        return "fgvc" in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


@torch.no_grad()
def _check(model: nn.Module, folder: Path, size: int, num_classes: int, tolerance: float, what: str,
           unchanged: str) -> float:
    """Max abs logit difference between timm loading ``folder`` and the fgvc model."""
    import timm

    fix = f"export with --format pt2 or onnx instead; {unchanged}"
    try:
        loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    except Exception as e:
        raise UserError(f"timm cannot load the {what} ({_one_line(e)}); {fix}") from e
    worst = 0.0
    for b in CHECK_BATCHES:
        x = torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(2000 + b))
        expected = model(x)
        got = loaded(model.normalize(x))
        if tuple(got.shape) != (b, num_classes):
            raise UserError(f"timm's model from the {what} gives logits of shape {tuple(got.shape)}, "
                            f"expected {(b, num_classes)}; {fix}")
        worst = max(worst, (got - expected).abs().max().item())
    if not worst <= tolerance:
        raise UserError(f"timm's model from the {what} differs from fgvc's by up to {worst:.3g} in the logits "
                        f"(tolerance {tolerance:g}); {fix}")
    return worst


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0][:200]}" if text else e.__class__.__name__


# ---------------------------------------------------------------- the model card
