"""The protocol record: the choices behind a number, written into every ``metrics.json``.

Numbers in fine-grained classification differ by 0.5-4 points between papers and
repositories mostly through hidden protocol choices: which images validation was drawn
from, the input size and crop ratio of the evaluation pipeline, test-time augmentation
folded into the headline number, pretraining data, seed and precision. fgvc writes them
next to the numbers (``metrics.json`` key ``protocol``), read from the objects the run used
(the datasets' lengths, the evaluation pipeline's own Resize and CenterCrop), not from
defaults, so that the record is true for the run. ``fgvc study`` tables and ``fgvc report``
show the fields that differ between rows (``differing_fields``).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


def eval_crop(pipeline) -> dict:
    """``{"input_size", "resize_shorter_side", "crop_ratio"}`` of an evaluation pipeline (a ``v2.Compose``),
    read from its own ``Resize`` and ``CenterCrop`` steps: the crop ratio is crop side / resized shorter
    side (the run's ``data.crop_ratio``, 0.875 by default, up to the rounding of the resize side to whole
    pixels). A step that is missing gives None for its fields (a pipeline that does not resize has crop
    ratio None)."""
    # imported here: report and study tables import this module without torch work
    from torchvision.transforms import v2

    resize = crop = None
    for step in getattr(pipeline, "transforms", []):
        if isinstance(step, v2.Resize) and resize is None:
            size = step.size
            resize = int(size[0]) if isinstance(size, (list, tuple)) and len(size) == 1 else \
                int(size) if isinstance(size, int) else None  # (h, w) resizes squash: no shorter side
        elif isinstance(step, v2.CenterCrop):
            h, w = step.size
            crop = int(h) if h == w else None
    return {"input_size": crop, "resize_shorter_side": resize,
            "crop_ratio": round(crop / resize, 4) if crop and resize else None}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout fgvc runs from, with ``+dirty`` when tracked files differ from it;
    None when fgvc is installed (not a checkout), git is missing or the package's files are not tracked
    (a venv inside someone else's repository)."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if git("ls-files", "--error-unmatch", Path(__file__).name) is None:
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", str(here))
    return f"{commit}+dirty" if dirty else commit


def _version() -> str:
    import fgvc

    return fgvc.__version__


def val_draw(val_dataset, val_fraction: float, seed: int) -> dict:
    """How the validation images were chosen: carved from the official train split (``val_fraction`` of
    each class, stratified, seeded; see ``fgvc.data.base.stratified_split``) or a ``val/`` folder of a
    folder dataset, used as it is."""
    root = getattr(val_dataset, "root", None)
    if getattr(val_dataset, "name", "") == "folder" and root is not None and (Path(root) / "val").is_dir():
        return {"source": "val folder", "val_fraction": None, "stratified": None, "seed": None}
    return {"source": "carved from train", "val_fraction": val_fraction, "stratified": True, "seed": seed}


def train_crop(aug) -> str:
    """How training images were cropped (``aug.*``): ``random-resized`` (aug.geometric), ``resize-random``
    (aug.random_crop: the evaluation resize, then a random crop, the FGVC papers' recipe) or ``center``
    (the evaluation pipeline itself)."""
    return "random-resized" if aug.geometric else "resize-random" if aug.random_crop else "center"


def training_protocol(cfg, train_ds, val_ds, test_ds, *, precision: str, device: str, pretrained: dict,
                      tta: str = "none", method: dict | None = None) -> dict:
    """The ``protocol`` block of a classifier run's metrics.json.

    ``train_ds``, ``val_ds``, ``test_ds`` are the datasets the run scored (their lengths after unreadable
    images were left out and generated ones mixed in); the crop fields come from ``test_ds.transform``, the
    pipeline that produced the test number. ``pretrained`` is ``fgvc.api.pretraining_source(cfg)``;
    ``precision`` and ``device`` are those that ran; ``method`` the FGVC method and its settings
    (``fgvc.methods.describe``; its name alone when not given)."""
    d = cfg.data
    return {
        "task": "classifier",
        "dataset": d.name,
        "split_sizes": {"train": len(train_ds), "val": len(val_ds), "test": len(test_ds)},
        "train_source": d.train_source,
        "val_draw": val_draw(val_ds, d.val_fraction, cfg.train.seed),
        **eval_crop(test_ds.transform),
        "train_crop": train_crop(cfg.aug),
        "tta": tta,
        "pretrained": pretrained,
        "output_stride": cfg.model.output_stride,
        "method": method if method is not None else {"name": cfg.method.name},
        "sampler": _sampler(cfg),
        "losses": {"center": cfg.loss.center, "center_alpha": cfg.loss.center_alpha,
                   "pairwise_confusion": cfg.loss.pairwise_confusion},
        "seed": cfg.train.seed,
        "precision": precision,
        "device": device,
        "fgvc_version": _version(),
        "git_commit": git_commit(),
    }



def _sampler(cfg) -> dict:
    """How training batches were drawn: shuffled epochs, or P classes x K images (data.sampler=pk)."""
    d = cfg.data
    if d.sampler != "pk":
        return {"name": d.sampler}
    return {"name": "pk", "classes": d.pk_classes or cfg.train.batch_size // d.pk_images, "images": d.pk_images}


def run_protocol(task: str, dataset: str, split_sizes: dict, *, pretrained: dict, device: str,
                 transform=None, seed: int | None = None, precision: str = "32-true", **fields) -> dict:
    """The ``protocol`` block of a run that is not a classifier training run (a linear probe, a label
    match, a GAN): the same fields where they apply; ``transform`` is the pipeline that scored the
    images (its crop fields are read from it, none without one); ``fields`` adds task-specific ones."""
    crop = eval_crop(transform) if transform is not None else {"input_size": None, "resize_shorter_side": None,
                                                               "crop_ratio": None}
    return {"task": task, "dataset": dataset, "split_sizes": split_sizes, **fields, **crop, "tta": "none",
            "pretrained": pretrained, "seed": seed, "precision": precision, "device": device,
            "fgvc_version": _version(), "git_commit": git_commit()}


def clip_protocol(metrics: dict) -> dict:
    """The ``protocol`` block of a CLIP run (zero-shot, linear probe, fine-tuning), from the facts its
    metrics.json holds; a field the run does not record is None (CLIP uses open_clip's own preprocessing,
    so the crop ratio is not fgvc's)."""
    sizes = None
    if "n_train" in metrics:
        sizes = {"train": metrics.get("n_train"), "val": metrics.get("n_val"), "test": metrics.get("n_test")}
    elif "n_images" in metrics and "split" in metrics:
        sizes = {metrics["split"]: metrics["n_images"]}
    return {
        "task": metrics.get("task"),
        "dataset": metrics.get("data"),
        "split_sizes": sizes,
        "input_size": metrics.get("image_size"),
        "tta": "none",
        "pretrained": {"source": "open_clip", "name": metrics.get("model"), "tag": metrics.get("pretrained")},
        "device": metrics.get("device"),
        "fgvc_version": _version(),
        "git_commit": git_commit(),
    }


def flatten(protocol: dict, prefix: str = "") -> dict:
    """``{"val_draw.seed": 0, ...}``: nested fields as dotted keys."""
    flat = {}
    for key, value in (protocol or {}).items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_fields(protocols: list[dict | None]) -> list[str]:
    """Dotted protocol fields whose values are not the same in every row (a field missing in a row counts as
    None), in the order they first appear; rows without a protocol block are left out of the comparison."""
    flats = [flatten(p) for p in protocols if isinstance(p, dict)]
    keys: list[str] = []
    for flat in flats:
        keys += [k for k in flat if k not in keys]
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


__all__ = ["clip_protocol", "differing_fields", "eval_crop", "flatten", "git_commit", "train_crop",
           "training_protocol", "val_draw"]
