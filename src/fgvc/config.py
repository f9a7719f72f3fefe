"""Typed, strict configuration: dataclasses, YAML files and dotted key=value overrides.

An unknown key names the valid ones (and the closest match); a value of the wrong type
names the key, the value and the expected type. Nothing runs before the config is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# the range table of this module's keys; CLASS_LIST (data.classes' grammar) stays importable from here
from fgvc.config_ranges import CHECKS, CLASS_LIST  # noqa: F401
from fgvc.errors import UserError


@dataclass
class DataConfig:
    name: str = "synthbirds"
    root: str = "data/synthbirds"
    image_size: int = 224
    crop_ratio: float = 0.875  # eval: shorter side resized to image_size / crop_ratio, then the centre crop
    val_fraction: float = 0.1  # carved from train, stratified, seeded; test is never used for selection
    num_workers: int = -1  # -1: auto (see data.resolve_num_workers)
    train_source: str = "real"  # real | real+generated | generated (images from `fgvc gan sample`)
    generated_root: str = ""  # folder written by `fgvc gan sample`
    generated_ratio: float = 1.0  # generated images per real training image, for real+generated
    skip_bad_images: bool = False  # decode every image first and leave out unreadable ones (counted in metrics.json)
    classes: str = ""  # "" all | first-half | second-half | 0-based indices/ranges "0-24,30" (fgvc.data.subset)
    cache: str = "off"  # off | auto | on: decoded images in a memory-mapped file (fgvc.data.cache, docs/data.md)
    cache_budget_gb: float = 4.0  # data.cache=auto caches the splits (train, val, test) that fit in this many GiB
    cache_dir: str = ""  # "" is $XDG_CACHE_HOME/fgvc/images (~/.cache/fgvc/images)
    augment_on: str = "host"  # host | device: random crop, flip, rotation, Cutout batched on the accelerator
    sampler: str = "random"  # random (shuffled epochs) | pk: P classes x K images per batch (fgvc.data.sampler)
    pk_classes: int = 0  # P of data.sampler=pk; 0: train.batch_size // data.pk_images
    pk_images: int = 4  # K of data.sampler=pk: images of each class in a batch


@dataclass
class ModelConfig:
    name: str = "resnet50"
    pretrained: bool = False
    dropout: float = 0.0
    trainable: str = "all"  # fc | layer4+fc | ... | all (ResNets); head | head+blocks:N | all (ViTs)
    init_from: str = ""  # a run directory whose backbone initialises this model (head replaced)
    weights: str = ""  # a local weights file: .safetensors, .pth/.pt/.bin or a TensorFlow Lite .tflite
    weights_sha256: str = ""  # filled in when model.weights is loaded; when given, the file must match it
    batchnorm: str = "auto"  # auto | train | frozen | reestimate (see fgvc.models.batchnorm)
    output_stride: int = 32  # 32 | 16 | 8: the last feature map's stride; below 32 the last stages dilate instead


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 16
    lr: float = 5e-5  # the seed's AdamW setting
    weight_decay: float = 1e-3
    schedule: str = "multistep"  # multistep (the paper: x gamma at each milestone epoch) | cosine (per step)
    milestones: list[int] = field(default_factory=lambda: [30, 60, 90])
    gamma: float = 0.1
    warmup: float = 0.0  # cosine schedule: fraction of all steps with a linear warm-up from lr / steps
    filter_bias_and_bn: bool = False  # no weight decay on biases and norm gains (1-d parameters; timm, CLIP)
    head_lr_scale: float = 1.0  # the head's rate over train.lr (a method's whole head; the authors: 5 for iSQRT-COV's classifier, 10 for PMG's new layers)
    patience: int = 20  # early stopping on validation accuracy; 0 disables it
    seed: int = 0
    precision: str = "auto"  # auto | 32-true | bf16-mixed | 16-mixed
    devices: int = 1
    accelerator: str = "auto"  # auto | cpu | cuda
    channels_last: str = "auto"  # auto | true | false: CNN weights channels-last (fgvc.devices.resolve_channels_last)
    compile: bool = False  # torch.compile the model (first steps slower while it compiles)
    threads: str = "auto"  # auto | fixed: on a CPU, torch threads follow the cores other jobs leave free (fgvc.train.threads)
    loggers: str = ""  # experiment logs under <run>/logs/: csv,tensorboard,mlflow,wandb (fgvc.train.loggers); "" none


@dataclass
class AugConfig:
    geometric: bool = False  # random resized crop + horizontal flip + rotation
    random_crop: bool = False  # the FGVC 448-px train crop: resize to image_size / crop_ratio, random crop, flip
    rotation: float = 15.0  # degrees, used when geometric is on
    cutout: int = 0  # number of square holes; 0 disables Cutout
    cutout_size: float = 0.25  # hole side as a fraction of the image side
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class AdvConfig:
    attack: str = "none"  # none, or an attack of fgvc.robust.attacks.ATTACKS that training can use
    eps: float = 0.03  # pixel units, images in [0, 1]
    alpha: float = 0.0  # step size; 0 means the attack's own default
    steps: int = 7  # steps of attacks that take them (pgd)
    loss_weight: float = 0.5  # Eq. 1: w * L(x) + (1 - w) * L(x_adv)


@dataclass
class LossConfig:
    """Terms a one-pass-per-image training step adds to its cross-entropy (fgvc.train.losses); 0 leaves a term
    out. Methods whose step scores several passes refuse them (fgvc.train.checks)."""
    center: float = 0.0  # weight of the center loss (Wen et al. 2016) on the features the final linear layer reads
    center_alpha: float = 0.5  # the centres' update rate (the paper's alpha)
    pairwise_confusion: float = 0.0  # weight of pairwise confusion (Dubey et al. 2018): lambda of the paper


@dataclass
class ClipConfig:
    """CLIP fine-tuning through the classifier loop (model.name=clip:<open_clip name>, fgvc.clip.classifier)."""
    pretrained: str = "openai"  # open_clip pretrained tag or a weights file; loaded when model.pretrained=true
    templates: str = "seed"  # prompt templates of the zero-shot head the fine-tuning starts from (fgvc.clip.prompts)
    descriptions: str = ""  # JSON file: class name -> descriptions, averaged into the zero-shot head
    wise_ft_alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # [] skips WiSE-FT
    cache_dir: str = ""  # open_clip's weights cache ("" is its default)
    offline: bool = False  # never download CLIP weights


@dataclass
class MethodConfig:
    """The FGVC method (fgvc.methods) and its settings; each setting belongs to the methods that read it
    (fgvc.methods refuses one set away from its default for a method that does not), defaults the papers'."""
    name: str = "plain"  # plain | bilinear | isqrt_cov | wsdan | cal | pmg | api_net (docs/methods.md)
    bilinear_dim: int = 0  # bilinear: 1x1 reduction to this many channels first; 0 (the paper) none
    isqrt_dim: int = 256  # isqrt_cov: channels after the 1x1 reduction (d)
    isqrt_iterations: int = 5  # isqrt_cov: Newton-Schulz iterations (N)
    attention_maps: int = 32  # wsdan, cal: attention maps (M)
    crop_threshold: list[float] = field(default_factory=lambda: [0.4, 0.6])  # wsdan, cal: training crop theta range
    drop_threshold: list[float] = field(default_factory=lambda: [0.2, 0.5])  # wsdan, cal: training drop theta range
    crop_padding: float = 0.1  # wsdan, cal: training crop box widened by this fraction of the side per edge
    test_crop_threshold: float = 0.1  # wsdan, cal: inference crop theta (on the mean attention map)
    test_crop_padding: float = 0.05  # wsdan, cal: inference crop padding
    center_weight: float = 1.0  # wsdan, cal: weight of the centre loss
    center_momentum: float = 0.05  # wsdan, cal: centre update rate (beta)
    effect_weight: float = 1.0  # cal: weight of the counterfactual effect cross-entropy
    pmg_width: int = 512  # pmg: the stage conv blocks' inner width and the classifiers' hidden width
    api_hidden: int = 512  # api_net: hidden width of the mutual-vector MLP
    api_margin: float = 0.05  # api_net: margin of the score-ranking loss


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    adv: AdvConfig = field(default_factory=AdvConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    out: str = "runs"  # parent folder of run directories


# Values in messages are shown shortened: a YAML alias bomb's repr would never end.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel = 3


def _show(value: Any) -> str:
    return _REPR.repr(value)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys(cls=Config, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts, e.g. ``train.lr``."""
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def unknown_key(key: str, cls=Config, what: str = "config") -> UserError:
    """'unknown <what> key ...' naming the closest keys of ``cls`` (or all of them when none is close)."""
    keys = all_keys(cls)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else f"; valid keys: {', '.join(keys)}"
    return UserError(f"unknown {what} key {key!r}{hint}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML value or a command-line string to the field's type, or explain."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            text = value.strip().strip("[]")
            value = [v for v in (s.strip() for s in text.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise UserError(f"config key {key!r} expects a list like [30,60,90], got {_show(value)}")
        return [_coerce(key, v, item_tp) for v in value]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise UserError(f"config key {key!r} expects true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"config key {key!r} expects an integer, got {_show(value)}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (ValueError, TypeError):
            raise UserError(f"config key {key!r} expects an integer, got {_show(value)}") from None
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"config key {key!r} expects a number, got {_show(value)}")
        try:
            out = float(value)
        except (ValueError, TypeError):
            raise UserError(f"config key {key!r} expects a number, got {_show(value)}") from None
        if out != out or out in (float("inf"), float("-inf")):
            raise UserError(f"config key {key!r} expects a finite number, got {_show(value)}")
        return out
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, bool):  # YAML's true/false/on/off for a key that takes words (see _WORDS)
            return "true" if value else "false"
        if isinstance(value, dict | list):
            raise UserError(f"config key {key!r} expects a single value, got {_show(value)}")
        return str(value)
    raise TypeError(f"unsupported config type {tp}")


def set_key(cfg: Any, key: str, value: Any, what: str = "config") -> None:
    """Set the dotted ``key`` of the config dataclass ``cfg`` (any nesting of dataclasses) to ``value``
    converted to the field's type; UserError naming the key (unknown: with the closest valid keys)."""
    parts = key.split(".")
    obj = cfg
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or part not in _field_types(type(obj)):
            raise unknown_key(key, type(cfg), what)
        obj = getattr(obj, part)
    types_ = _field_types(type(obj)) if dataclasses.is_dataclass(obj) else {}
    name = parts[-1]
    if name not in types_ or dataclasses.is_dataclass(types_[name]):
        raise unknown_key(key, type(cfg), what)
    setattr(obj, name, _coerce(key, value, types_[name]))


def leaves(d: dict, prefix: str = ""):
    """(dotted key, value) pairs, lazily and at most three levels deep: a YAML alias bomb or a
    mapping that contains itself stops at its first (unknown) key."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and prefix.count(".") < 2:
            yield from leaves(v, key + ".")
        else:
            yield key, v


def flat_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as ``{dotted key: value}``."""
    return dict(leaves(dataclasses.asdict(cfg)))


def check_ranges(cfg: Any, checks: dict[str, tuple[typing.Callable[[Any], bool], Any]], what: str = "config") -> None:
    """``checks``: dotted key -> (predicate, what is expected, or a function giving it); UserError naming the
    first key whose value fails."""
    flat = flat_dict(cfg)
    for key, (ok, expected) in checks.items():
        if not ok(flat[key]):
            expected = expected() if callable(expected) else expected
            raise UserError(f"{what} key {key!r} must be {expected}, got {_show(flat[key])}")


def load_dataclass(cls: type, path: str | Path | None = None, overrides: list[str] | dict | None = None,
                   what: str = "config") -> Any:
    """``cls()`` defaults <- YAML file <- ``key=value`` overrides (list of strings or dict), unvalidated:
    the schema-driven loading behind every config (``Config``, the GAN's ``GanConfig``); errors say ``what``."""
    cfg = cls()
    layers = [read_yaml(path)] if path else []
    if overrides:
        layers.append(overrides if isinstance(overrides, dict) else parse_overrides(list(overrides)))
    for layer in layers:
        for key, value in leaves(layer):
            set_key(cfg, key, value, what)
    return cfg


# Keys that take a word besides true/false: the spellings a bool key accepts, mapped to theirs
_YES, _NO = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_WORDS = {("train", "channels_last"): ("true", "false"), ("data", "cache"): ("on", "off")}


def validate(cfg: Config) -> Config:
    """Range-check every value; raise UserError naming the first bad key."""
    for (section, key), (yes, no) in _WORDS.items():
        value = str(getattr(getattr(cfg, section), key)).strip().lower()
        setattr(getattr(cfg, section), key, yes if value in _YES else no if value in _NO else value)
    check_ranges(cfg, CHECKS)
    if cfg.aug.geometric and cfg.aug.random_crop:
        raise UserError("aug.geometric and aug.random_crop are two train crops (a random-resized crop, and a random "
                        "crop of the image resized as for evaluation); set one of them to false")
    return cfg


def get(cfg: Config, key: str) -> Any:
    """The value of a dotted key, e.g. ``get(cfg, "train.lr")``."""
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def apply(cfg: Config, values: dict[str, Any]) -> Config:
    """Set dotted keys (nested dicts are flattened) and re-validate."""
    for key, value in leaves(values):
        set_key(cfg, key, value)
    return validate(cfg)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["train.lr=1e-3", ...]`` -> ``{"train.lr": "1e-3"}``; a malformed item is a UserError."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} is not key=value (for example train.lr=1e-3)")
        out[key.strip()] = value.strip()
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)  # where the parser gave up (1-based for people)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"config file {path} is not valid YAML{where} ({what})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults <- YAML file <- key=value overrides, validated."""
    cfg = Config()
    if path:
        try:
            apply(cfg, read_yaml(path))
        except UserError as e:
            text = str(e)
            raise UserError(text if str(path) in text else f"{path}: {text}") from None
    if overrides:
        apply(cfg, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    return validate(cfg)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def shipped_config(name: str) -> Path:
    """Path of a YAML file shipped in fgvc/configs (name with or without .yaml)."""
    base = Path(__file__).parent / "configs"
    path = base / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        names = sorted(p.stem for p in base.glob("*.yaml"))
        raise UserError(f"no shipped config {name!r}; choose one of {', '.join(names)}")
    return path
