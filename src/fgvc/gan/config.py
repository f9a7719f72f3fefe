"""The GAN run's own typed config: defaults <- YAML <- dotted key=value overrides, strict.

Its own schema (the dataclasses and range checks below) on the classifier config's machinery
(``fgvc.config.load_dataclass``, ``check_ranges``): the same types, messages and did-you-mean hints.

Keys: ``data.name data.root data.image_size data.split data.val_fraction data.num_workers
iterations batch_size n_dis lr betas decay_start ch z_dim ema_decay flip sample_every
sample_classes checkpoint_every keep_checkpoints seed device out loggers``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fgvc.config import all_keys, check_ranges, flat_dict, load_dataclass
from fgvc.errors import UserError
from fgvc.gan.networks import IMAGE_SIZES
from fgvc.train.loggers import parse_loggers


@dataclass
class GanDataConfig:
    name: str = "synthbirds"
    root: str = "data/synthbirds"
    image_size: int = 64  # 32, 64 (the seed's setting) or 128 pixels
    split: str = "train"  # train on the classifier's train split so val/test stay unseen
    val_fraction: float = 0.1  # must match the classifier run for the same train split
    num_workers: int = 2  # only for decoding the dataset once into memory


@dataclass
class GanConfig:
    data: GanDataConfig = field(default_factory=GanDataConfig)
    iterations: int = 5000  # generator updates, as in the seed
    batch_size: int = 64  # real and fake images per update, as in the reference
    n_dis: int = 5  # discriminator updates per generator update
    lr: float = 2e-4  # Adam, both networks
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])
    decay_start: float = 0.8  # fraction of iterations after which lr falls linearly to 0 (1 = never)
    ch: int = 64  # base width; the widest layer has 16 * ch channels
    z_dim: int = 128
    ema_decay: float = 0.999  # generator weight averaging (not in the seed); 0 turns it off
    flip: bool = True  # random horizontal flips of real images
    sample_every: int = 500  # iterations between sample grids (0: only at the end)
    sample_classes: int = 10  # rows of the sample grid (classes evenly spread)
    checkpoint_every: int = 500  # iterations between checkpoints (also written at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 keeps all (for quality over iterations)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out: str = "runs"  # parent folder of run directories
    loggers: str = ""  # experiment logs under <run>/logs/: csv,tensorboard,mlflow,wandb (fgvc.train.loggers); "" none


_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.image_size": (lambda v: v in IMAGE_SIZES, f"one of {', '.join(map(str, IMAGE_SIZES))}"),
    "data.split": (lambda v: v in ("train", "val", "test"), "one of train, val, test"),
    "data.val_fraction": (lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)"),
    "data.num_workers": (lambda v: v >= 0, "0 or more"),
    "iterations": (lambda v: v >= 1, "1 or more"),
    "batch_size": (lambda v: v >= 2, "2 or more (batch norm needs a batch)"),
    "n_dis": (lambda v: v >= 1, "1 or more"),
    "lr": (lambda v: v > 0, "a positive number"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1), like [0,0.9]"),
    "decay_start": (lambda v: 0 <= v <= 1, "a fraction of the iterations in [0, 1]"),
    "ch": (lambda v: v >= 1, "1 or more"),
    "z_dim": (lambda v: v >= 1, "1 or more"),
    "ema_decay": (lambda v: 0 <= v < 1, "a decay in [0, 1)"),
    "sample_every": (lambda v: v >= 0, "0 (only at the end) or more"),
    "sample_classes": (lambda v: v >= 1, "1 or more"),
    "checkpoint_every": (lambda v: v >= 1, "1 or more"),
    "keep_checkpoints": (lambda v: v >= 0, "0 (keep all) or more"),
    "device": (lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"), "auto, cpu, cuda or cuda:N"),
}


def gan_keys(cls=GanConfig, prefix: str = "") -> list[str]:
    """Every dotted key the GAN config accepts."""
    return all_keys(cls, prefix)


def validate_gan_config(cfg: GanConfig) -> GanConfig:
    """Range-check every value; raise UserError naming the first bad key."""
    check_ranges(cfg, _CHECKS, what="GAN config")
    if cfg.loggers:  # a did-you-mean sentence for a misspelt logger
        parse_loggers(cfg.loggers, key="loggers")
    return cfg


def load_gan_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> GanConfig:
    """Defaults <- YAML file <- ``key=value`` overrides (list of strings or dict), validated
    (``fgvc.config.load_dataclass``: the same loading, types and did-you-mean hints as the classifier's)."""
    return validate_gan_config(load_dataclass(GanConfig, path, overrides, what="GAN config"))


def dump_gan_config(cfg: GanConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


# Keys `fgvc gan train --resume RUN key=value` may change: each takes effect from the resumed
# iteration on. The others are restored from the checkpoint (Adam's lr and betas, the noise
# stream of the seed) or shape the networks and data, so a new value could not take effect.
RESUMABLE_KEYS = ("iterations", "sample_every", "sample_classes", "checkpoint_every", "keep_checkpoints",
                  "device", "data.num_workers", "loggers")


def check_resume_overrides(run_config: GanConfig, resumed: GanConfig) -> None:
    """Refuse (UserError) a resume whose overrides change a key outside RESUMABLE_KEYS."""
    old, new = flat_dict(run_config), flat_dict(resumed)
    changed = [k for k in new if new[k] != old.get(k) and k not in RESUMABLE_KEYS]
    if changed:
        k = changed[0]
        raise UserError(f"{k}={new[k]!r} cannot take effect on resume (the run used {old.get(k)!r}; it is restored "
                        f"from the checkpoint or shapes the networks and data); only {', '.join(RESUMABLE_KEYS)} "
                        "can change; start a new run for another value")
