"""Pretrained weights from a local file, the first-class source when nothing can be downloaded.

``model.weights=PATH`` takes ``.safetensors``; ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` read with
``torch.load(weights_only=True)`` (a pickle that would run code is refused); and TensorFlow
Lite ``.tflite`` files of the MobileNet family (fgvc.models.tflite). The usual wrappings are
undone: a ``state_dict`` / ``model`` / ``module`` entry, ``module.`` (DDP) and ``_orig_mod.``
(torch.compile) prefixes, fgvc checkpoints (``net.`` + ``normalize.``), and torchvision's head
names. The head is replaced when its class count differs from the dataset's. Position tables
made for another image size are resampled as the model family's own loader does (timm's
``checkpoint_filter_fn``, torchvision's ``interpolate_embeddings``). The file's name and sha256
are recorded as the run's pretraining source.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from fgvc.errors import UserError
from fgvc.models import tflite
from fgvc.scored_checkpoint import sha256

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SUFFIXES = (".safetensors", *PICKLE_SUFFIXES, ".tflite")
_WRAPPERS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
_PREFIXES = ("module.", "_orig_mod.", "model.")
# head names in other codebases' files -> fgvc's head (dropout, then linear: index 1)
_HEAD_ALIASES = {"fc.1": ("fc",), "heads.1": ("heads.head",)}


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (fgvc.scored_checkpoint.sha256, which eval uses without torch)."""
    return sha256(Path(path))


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors of a ``.safetensors`` or weights-only pickle file, unwrapped; and its metadata.

    Errors (UserError): a missing file, an unknown suffix, a pickle that holds code, a file
    with no tensors in it.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise UserError(f"weights file {path} is not a valid safetensors file ({e})") from None
        return _unwrap(state, path), meta
    if suffix in PICKLE_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise UserError(f"weights file {path} holds Python objects besides tensors and was refused (loading it "
                            "could run code); convert it to .safetensors where it came from") from None
        except Exception as e:  # truncated or not a torch file
            raise UserError(f"weights file {path} cannot be read by torch.load ({e.__class__.__name__}); "
                            "is it complete?") from None
        return _unwrap(obj, path), {}
    raise UserError(f"model.weights={path} has suffix {suffix or '(none)'!r}; use one of {', '.join(SUFFIXES)}")


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {"state_dict": {"model": {...}}} and the like
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise UserError(f"weights file {path} holds a {type(obj).__name__}, not a mapping of parameter names to "
                        "tensors")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise UserError(f"weights file {path} holds no tensors")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights_file(model, path: str | Path, expected_sha256: str = "") -> dict:
    """Load ``path`` into ``model`` (a fgvc Classifier) in place; returns the origin record.

    The record: ``file`` (name), ``sha256``, ``format``, ``head`` ('loaded' or 'replaced'), and
    ``folded_batchnorm`` (TensorFlow Lite). Also sets ``model.folded_batchnorm``.
    Errors (UserError): the file is missing, its sha256 differs from ``expected_sha256``, or
    its tensors do not fit the model (the first missing and unexpected names are given).
    """
    path = Path(os.path.expandvars(str(path))).expanduser()  # study files name $FGVC_WEIGHTS/...
    if "$" in str(path):
        raise UserError(f"model.weights={path} names an environment variable that is not set; set it to the "
                        "folder holding the weights (for example FGVC_WEIGHTS=DIR fgvc study ...; docs/weights.md "
                        "says where the files come from)")
    if not path.is_file():
        raise UserError(f"model.weights={path} does not exist; give the path of a weights file "
                        f"({', '.join(SUFFIXES)})")
    digest = sha256_file(path)
    if expected_sha256 and expected_sha256 != digest:
        raise UserError(f"model.weights={path} has sha256 {digest[:12]}..., not the {expected_sha256[:12]}... that "
                        "model.weights_sha256 asks for; the file changed: use the original file or clear "
                        "model.weights_sha256")
    if path.suffix.lower() == ".tflite":
        state, meta = tflite.state_dict_for(model, path), tflite.input_normalization(path)
        meta = {"mean": json.dumps(meta[0]), "std": json.dumps(meta[1]), "fgvc.batchnorm": "folded"}
        fmt = "tflite"
    else:
        state, meta = read_state_dict(path)
        fmt = path.suffix.lower().lstrip(".")
    head = _load_into(model, state, path)
    if "mean" in meta and "std" in meta:  # input normalisation that came with the weights
        model.normalize.mean.copy_(torch.tensor(json.loads(meta["mean"])).view(1, -1, 1, 1))
        model.normalize.std.copy_(torch.tensor(json.loads(meta["std"])).view(1, -1, 1, 1))
    model.folded_batchnorm = meta.get("fgvc.batchnorm") == "folded"
    return {"file": path.name, "sha256": digest, "format": fmt, "head": head,
            "folded_batchnorm": model.folded_batchnorm}


def _load_into(model, state: dict[str, torch.Tensor], path: Path) -> str:
    """Copy ``state`` into the classifier; 'loaded' or 'replaced' for the head."""
    if any(k.startswith("net.") for k in state):  # a fgvc checkpoint: normalisation included
        for k in ("normalize.mean", "normalize.std"):
            if k in state:
                getattr(model.normalize, k.split(".")[1]).copy_(state[k].view(1, -1, 1, 1))
        state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    target = model.net.state_dict()
    head = model.head_path
    for alias in _HEAD_ALIASES.get(head, ()):  # torchvision's fc.weight -> fgvc's fc.1.weight
        state = {(f"{head}.{k[len(alias) + 1:]}" if k.startswith(alias + ".") and k not in target else k): v
                 for k, v in state.items()}
    if any(k not in target or target[k].shape != v.shape for k, v in state.items()):
        state = resampled_to(model.net, state)  # a position table made for another image size, as timm loads it
    head_keys = {f"{head}.weight", f"{head}.bias"}
    head_fits = all(k in state and state[k].shape == target[k].shape for k in head_keys)
    if not head_fits:  # other class count (or no head in the file): keep the fresh head
        state = {k: v for k, v in state.items() if k not in head_keys}
    fresh = set() if head_fits else head_keys  # the new head's keys are not expected from the file
    missing = [k for k in target if k not in state and k not in fresh and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in state if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)} where the model has {tuple(target[k].shape)}")
        if missing:
            parts.append(f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[0]}" + (f" and {len(unexpected) - 1} more"
                                                          if len(unexpected) > 1 else ""))
        raise UserError(f"weights file {path} does not fit {model.name}: {'; '.join(parts)}; check model.name "
                        "(the file must come from the same architecture)")
    model.net.load_state_dict(state, strict=False)
    if not head_fits:
        # a new head starts at zero (BiT, Kolesnikov et al. 2020): the first steps then do not push
        # large random gradients through the pretrained layers (timm's head init gave losses near 16)
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
    return "loaded" if head_fits else "replaced"


def resampled_to(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as the model family's own loader would give it to ``net``: timm's ``checkpoint_filter_fn`` of
    the family (ViT, DeiT, EVA, BEiT, swin, ...: position tables and patch embeddings resampled to the grid
    ``net`` was built for, as ``timm.create_model(..., pretrained=True)`` does), or torchvision's
    ``interpolate_embeddings`` for its ViTs. ``state`` unchanged where neither applies or the filter fails
    (the shape sentence of ``_load_into`` then says what does not fit)."""
    import sys

    from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

    if isinstance(net, VisionTransformer):
        if "encoder.pos_embedding" not in state:
            return state
        try:
            return interpolate_embeddings(net.image_size, net.patch_size, state)
        except (RuntimeError, ValueError):
            return state
    module = sys.modules.get(type(net).__module__)
    fit = getattr(module, "checkpoint_filter_fn", None) if type(net).__module__.startswith("timm.") else None
    if fit is None:
        return state
    try:
        return fit(dict(state), net)
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError, AssertionError):
        return state


def _stamp(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _sha256_once(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)  # a study's rows share a backbone: hash its file once (per size and mtime)


def sha256_once(path: str | Path) -> str:
    """``sha256_file(path)``, computed once per file path, size and modification time."""
    return _sha256_once(str(path), *_stamp(path))


__all__ = ["SUFFIXES", "load_weights_file", "read_state_dict", "sha256_file", "sha256_once"]
