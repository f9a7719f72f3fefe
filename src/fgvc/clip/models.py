"""CLIP models by open_clip name and pretrained tag, weights from the local cache, [0, 1] inputs.

Weights are looked up in open_clip's own caches (the Hugging Face hub cache, or
``~/.cache/clip`` for URL downloads) before anything touches the network, so a cached
model loads offline and a missing one fails with one sentence naming the model, the tag
and the folder the file belongs in.
"""

from __future__ import annotations

import difflib
import os
import pickle
import urllib.parse
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn

from fgvc.errors import UserError
from fgvc.models.hub import hf_endpoint, reachable

PRECISIONS = ("fp32", "fp16", "bf16")
URL_CACHE = "~/.cache/clip"  # where open_clip's download_pretrained_from_url puts OpenAI .pt files


def hf_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The Hugging Face hub cache open_clip downloads into (``HF_HUB_CACHE`` / ``HF_HOME`` aware)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hf_cached(repo_id: str, filename: str, cache_dir: str | Path | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_cache_dir(cache_dir)))
    return hit if isinstance(hit, str) and os.path.isfile(hit) else None


def _hf_weight_names(filename: str) -> list[str]:
    # open_clip prefers a .safetensors twin of the named file; look for it first, as it does
    if filename == HF_WEIGHTS_NAME:
        return [HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def cached_weights(model_name: str, pretrained: str, cache_dir: str | Path | None = None) -> str | None:
    """Path of the cached weights file for a built-in open_clip name and tag, or None; never downloads."""
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])
        for name in _hf_weight_names(filename or HF_WEIGHTS_NAME):
            hit = _hf_cached(repo_id, name, cache_dir)
            if hit:
                return hit
    if cfg.get("url"):
        target = Path(cache_dir or URL_CACHE).expanduser() / os.path.basename(cfg["url"])
        if target.is_file():
            return str(target)
    return None


def _expected_locations(model_name: str, pretrained: str, cache_dir: str | Path | None) -> str:
    from fgvc.models.hub import hf_repo_folder

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    places = []
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])
        names = " or ".join(_hf_weight_names(filename or HF_WEIGHTS_NAME))
        places.append(f"the Hugging Face cache {hf_cache_dir(cache_dir)} (repo {repo_id}, file {names}, "
                      f"in {hf_repo_folder(repo_id, hf_cache_dir(cache_dir))})")
    if cfg.get("url"):
        places.append(str(Path(cache_dir or URL_CACHE).expanduser() / os.path.basename(cfg["url"])))
    return " and ".join(places)


def _missing_weights(model_name: str, pretrained: str, cache_dir, why: str) -> UserError:
    return UserError(
        f"CLIP weights for model {model_name!r} tag {pretrained!r} are not cached ({why}; looked in "
        f"{_expected_locations(model_name, pretrained, cache_dir)}): run once with network access to download "
        f"them, put the file there, or pass a weights file path as the pretrained value"
    )


def check_model_name(model_name: str) -> None:
    """UserError naming the closest open_clip architectures unless open_clip knows ``model_name``."""
    if open_clip.get_model_config(model_name) is not None:
        return
    close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"unknown CLIP model {model_name!r}{hint}; see open_clip.list_models() or use an hf-hub: name")


def hf_text_source(model_name: str) -> dict[str, str]:
    """What an open_clip model takes from Hugging Face transformers: {"tokenizer": repo} (SigLIP, CLIPA, ...)
    and {"text tower": repo} (RoBERTa, XLM-R, NLLB, mT5 towers), from its built-in config or a ``local-dir:``
    folder's open_clip_config.json; {} for open_clip's own BPE tokenizer and text transformer."""
    if model_name.startswith("local-dir:"):
        import json

        path = Path(model_name[len("local-dir:"):]) / HF_CONFIG_NAME
        try:
            cfg = json.loads(path.read_text(encoding="utf-8")).get("model_cfg") or {}
        except (OSError, ValueError, AttributeError):
            return {}  # open_clip's own sentence about the folder follows
    else:
        cfg = open_clip.get_model_config(model_name) or {}
    text = cfg.get("text_cfg") or {}
    found = {"tokenizer": text.get("hf_tokenizer_name"), "text tower": text.get("hf_model_name")}
    return {k: v for k, v in found.items() if isinstance(v, str) and v}


def check_hf_text(model_name: str, cache_dir=None, download: bool = True, tokenizer: bool = True) -> None:
    """UserError, before any download, when ``model_name`` needs Hugging Face transformers (its tokenizer,
    or with ``tokenizer=False`` only its text tower) and transformers is not installed, or when those files
    are neither cached nor downloadable (open_clip would raise ModuleNotFoundError, or the hub's OSError)."""
    import importlib.util

    needs = hf_text_source(model_name)
    if not tokenizer:
        needs.pop("tokenizer", None)
    if not needs:
        return
    repos = sorted(set(needs.values()))
    what = " and ".join(needs) + f" ({', '.join(repos)})" if len(repos) == 1 else \
        " and ".join(f"{k} ({v})" for k, v in needs.items())
    if importlib.util.find_spec("transformers") is None:
        raise UserError(f"CLIP model {model_name!r} takes its {what} from Hugging Face transformers, which is not "
                        "installed: `pip install transformers`, or choose a model with open_clip's own tokenizer "
                        "(ViT-B-32, ViT-B-16, ViT-L-14, ...)")
    for kind, repo in needs.items():
        # the tokenizer goes to the cache fgvc was given, a text tower's config to the default one (open_clip)
        cache = hf_cache_dir(cache_dir if kind == "tokenizer" else None)
        if any(_hf_cached(repo, f, cache) for f in ("tokenizer_config.json", "tokenizer.json", "config.json")):
            continue
        if download and reachable(hf_endpoint()):
            continue
        from fgvc.models.hub import hf_repo_folder

        why = "offline" if not download else f"{urllib.parse.urlsplit(hf_endpoint()).hostname} cannot be reached"
        raise UserError(f"the {kind} of CLIP model {model_name!r} ({repo} on the Hugging Face hub) is not cached "
                        f"in {hf_repo_folder(repo, cache)} ({why}): run once with network access to download it")


def _resolve_hf_hub(model_name: str, cache_dir, download: bool) -> str:
    """An ``hf-hub:org/repo`` name, rewritten to ``local-dir:<snapshot>`` when config and weights are cached."""
    repo_id = model_name[len("hf-hub:"):]
    config = _hf_cached(repo_id, HF_CONFIG_NAME, cache_dir)
    weights = any(_hf_cached(repo_id, n, cache_dir) for n in _hf_weight_names(HF_WEIGHTS_NAME))
    if config and weights:
        return "local-dir:" + os.path.dirname(config)
    if download and not reachable(hf_endpoint()):  # fail now, not after the hub's retries
        download = False
    if not download:
        raise UserError(
            f"CLIP model {model_name!r} is not cached in the Hugging Face cache {hf_cache_dir(cache_dir)} "
            f"(needs {HF_CONFIG_NAME} and {HF_SAFE_WEIGHTS_NAME} or {HF_WEIGHTS_NAME} of repo {repo_id}); "
            "run once with network access to download it"
        )
    return model_name


def load_clip(model_name: str, pretrained: str | None = "openai", device: str | torch.device = "cpu",
              precision: str = "fp32", cache_dir: str | Path | None = None, download: bool = True):
    """``(model, preprocess, tokenizer)`` for an open_clip name and tag, or an ``hf-hub:`` / ``local-dir:`` name.

    ``pretrained``: a tag (``openai``, ``laion2b_s12b_b42k``, ...), a path to a weights
    file, or None for random weights. OpenAI tags get QuickGELU whatever the name says,
    since those weights were trained with it. ``preprocess`` maps a PIL image to a float
    tensor in [0, 1] (resize + crop only): wrap the model in :class:`ClipImageEncoder` or
    fgvc.clip.classifier's ``ClipNet``, which normalise inside. ``download=False`` (or
    ``HF_HUB_OFFLINE=1``) never touches the network.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown CLIP precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    download = download and not _offline()
    kwargs: dict = {}
    name, weights = model_name, None
    if model_name.startswith("hf-hub:"):
        name = _resolve_hf_hub(model_name, cache_dir, download)  # local-dir: when cached
    elif model_name.startswith("local-dir:"):
        folder = Path(model_name[len("local-dir:"):]).expanduser()
        if not folder.is_dir():
            raise UserError(f"CLIP model folder {folder} does not exist; "
                            "pass a folder holding open_clip_config.json and the weights")
        name = f"local-dir:{folder}"
    if name.startswith("local-dir:"):  # an hf-hub: name being downloaded brings its config with it
        check_hf_text(name, cache_dir, download)
    elif not model_name.startswith("hf-hub:"):
        model_name = name = model_name.replace("/", "-")  # ViT-B/32 is how papers write ViT-B-32
        check_model_name(model_name)
        check_hf_text(model_name, cache_dir, download)  # before the weights' download, not after
        if pretrained and str(pretrained).lower() != "none":
            tag_cfg = open_clip.get_pretrained_cfg(model_name, str(pretrained))
            if tag_cfg:
                weights = _tag_weights(model_name, str(pretrained), tag_cfg, cache_dir, download)
                # a file path loses the tag's preprocessing and activation: pass both on explicitly
                kwargs["force_preprocess_cfg"] = {
                    k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
                }
                kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu")) and not model_name.endswith("-quickgelu")
            elif Path(pretrained).expanduser().is_file():
                weights = str(Path(pretrained).expanduser())
            elif os.sep in str(pretrained) or str(pretrained).endswith((".pt", ".pth", ".bin", ".safetensors")):
                raise UserError(f"weights file {pretrained} for CLIP model {model_name!r} does not exist; "
                                "check the path or pass a pretrained tag")
            else:
                tags = open_clip.list_pretrained_tags_by_model(model_name)
                shown = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "")
                raise UserError(
                    f"pretrained {pretrained!r} for CLIP model {model_name!r} is neither a known tag nor an existing "
                    f"file; choose one of {shown or '(no tags: pass a weights file)'}"
                )
    cache = str(Path(cache_dir).expanduser()) if cache_dir else None
    try:
        model = open_clip.create_model(
            name, pretrained=weights, precision=precision, device=device, cache_dir=cache, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(name, cache_dir=cache)
    except UserError:
        raise
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met objects beyond tensors and numbers
        raise UserError(f"CLIP weights file {weights} holds pickled objects that could run code, so it is not "
                        "loaded; use a .safetensors file or weights from a trusted source") from None
    except (RuntimeError, FileNotFoundError, ValueError, OSError) as e:
        where = weights or model_name
        detail = " ".join(str(e).split())[:200]
        raise UserError(f"cannot load CLIP model {model_name!r} from {where} ({detail}); "
                        "check that the weights match the model name") from None
    model.eval()
    return model, clip_transform(model), tokenizer


def _tag_weights(model_name: str, tag: str, tag_cfg: dict, cache_dir, download: bool) -> str:
    hit = cached_weights(model_name, tag, cache_dir)
    if hit:
        return hit
    if not download:
        raise _missing_weights(model_name, tag, cache_dir, "offline")
    # open_clip takes the hub when a tag has a repository there, else the URL; without a
    # network its hub client retries for about 45 s per file, so look at the host first
    source = hf_endpoint() if tag_cfg.get("hf_hub") else tag_cfg.get("url", "")
    if source and not reachable(source):
        host = urllib.parse.urlsplit(source).hostname
        raise _missing_weights(model_name, tag, cache_dir, f"download failed: {host} cannot be reached")
    try:
        target = open_clip.download_pretrained(tag_cfg, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as e:  # noqa: BLE001 -- any network or hub failure means the same thing to the user
        raise _missing_weights(model_name, tag, cache_dir, f"download failed: {e.__class__.__name__}") from None
    if not target or not os.path.isfile(target):
        raise _missing_weights(model_name, tag, cache_dir, "download returned no file")
    return target


def preprocess_cfg(clip_model) -> dict:
    """The model's preprocessing: ``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``."""
    return open_clip.get_model_preprocess_cfg(clip_model)


def image_size(clip_model) -> int:
    size = preprocess_cfg(clip_model).get("size", 224)
    return int(size if isinstance(size, int) else size[0])


def clip_transform(clip_model):
    """PIL -> float tensor in [0, 1] with the model's resize and crop, but no normalisation."""
    cfg = preprocess_cfg(clip_model)
    fields = {k: cfg[k] for k in ("size", "interpolation", "resize_mode") if k in cfg}
    # mean 0, std 1 turns open_clip's Normalize into the identity, keeping its exact resize rules
    return image_transform_v2(PreprocessCfg(**fields, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)), is_train=False)


class ClipImageEncoder(nn.Module):
    """CLIP's image tower on images in [0, 1]: normalises with the model's mean/std, returns unit-norm embeddings."""

    def __init__(self, clip_model):
        super().__init__()
        cfg = preprocess_cfg(clip_model)
        self.visual = clip_model.visual
        self.register_buffer("mean", torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        dtype = next(self.visual.parameters()).dtype  # an fp16/bf16 tower needs inputs of its own dtype
        return F.normalize(self.visual(x.to(dtype)).float(), dim=-1)


def autocast(device: torch.device):
    """fp16/bf16 autocast on a GPU (bf16 where supported), a no-op context elsewhere."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)
