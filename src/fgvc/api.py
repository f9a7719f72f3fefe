"""The assembler: a model name, a config or a run directory -> a model.

The one place that turns a config into a network (``build_model``: backbone, weights file, an earlier
run's backbone, trainable depth), a run directory into its model (``load``) and into what every analysis
reads (``Run``), and the only place that dispatches on CLIP (``model.name=clip:...`` builds through
``fgvc.clip.classifier``). It sits above models/ and clip/ and below the training loop and the analyses
(docs/architecture.md); run-directory files themselves are read and written by ``fgvc.runs``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fgvc import config as config_mod
from fgvc import runs
from fgvc.data import config_split, how_to_get
from fgvc.data.transforms import eval_transform
from fgvc.devices import resolve_precision
from fgvc.errors import UserError
from fgvc.methods import build_from_config
from fgvc.models import apply_trainable, create_model
from fgvc.models.factory import TORCHVISION_MODELS, is_clip
from fgvc.models.hub import cached_weights_file
from fgvc.models.weights import load_weights_file, sha256_once
from fgvc.runs import check_run_dir, load_class_names, load_config, load_weights, read_metrics

# open_clip (seconds to import) is loaded inside the functions below, only for a CLIP run


def build_model(cfg: config_mod.Config, num_classes: int, class_names: list[str] | None = None):
    """Backbone with a fresh head, optionally initialised from an earlier run, then frozen by spec.
    A pretrained CLIP model (``model.name=clip:...``) starts from its zero-shot head, which needs
    ``class_names`` (fgvc.clip.classifier)."""
    if is_clip(cfg.model.name) and cfg.model.output_stride != 32:
        raise UserError(f"{cfg.model.name} is a CLIP image tower, which fgvc builds at its own stride; "
                        "leave model.output_stride at 32")
    if is_clip(cfg.model.name):
        from fgvc.clip.classifier import clip_classifier, zeroshot_classifier

        model = zeroshot_classifier(cfg, class_names or [str(i) for i in range(num_classes)]) \
            if cfg.model.pretrained else clip_classifier(cfg.model.name, num_classes, dropout=cfg.model.dropout,
                                                         image_size=cfg.data.image_size)
    else:
        model = _backbone(cfg, num_classes, pretrained=cfg.model.pretrained)
    if cfg.model.weights:  # a local file (fgvc.models.weights): its origin goes into config.yaml and metrics.json
        origin = load_weights_file(model, cfg.model.weights, expected_sha256=cfg.model.weights_sha256)
        cfg.model.weights_sha256 = origin["sha256"]
    # method.name: the method's head on the backbone's feature map (plain keeps the backbone's own head)
    model = build_from_config(cfg.method, model, num_classes, cfg.model.dropout)
    if cfg.model.init_from:
        source_cfg = load_config(cfg.model.init_from)
        if source_cfg.model.name != cfg.model.name:
            raise UserError(f"model.init_from={cfg.model.init_from} holds a {source_cfg.model.name}, "
                            f"not a {cfg.model.name}; set model.name={source_cfg.model.name}")
        state = load_weights(Path(cfg.model.init_from) / "checkpoints" / "best.safetensors")
        head_prefix = f"net.{getattr(model, 'head_slot', model.head_path)}."
        # the head is sized for the source classes: keep the new one
        backbone = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
        missing, unexpected = model.load_state_dict(backbone, strict=False)
        if unexpected or any(not k.startswith(head_prefix) for k in missing):
            raise UserError(f"weights in {cfg.model.init_from} do not fit {cfg.model.name}")
    apply_trainable(model, cfg.model.trainable)
    return model


def _backbone(cfg: config_mod.Config, num_classes: int, pretrained: bool):
    """The configured backbone with a fresh head (model.name, dropout, data.image_size, model.output_stride)."""
    return create_model(cfg.model.name, num_classes, pretrained=pretrained, dropout=cfg.model.dropout,
                        image_size=cfg.data.image_size, output_stride=cfg.model.output_stride)


def run_task(cfg: config_mod.Config) -> str:
    """metrics.json ``task`` of a training run of ``cfg``: ``clip_finetune`` for a CLIP model, else ``classifier``."""
    return "clip_finetune" if is_clip(cfg.model.name) else "classifier"


def pretraining_source(cfg) -> dict:
    """Where the starting weights came from, for metrics.json: file + sha256, a cache, a run, or none."""
    m = cfg.model
    if m.weights:
        return {"source": "file", "file": Path(m.weights).name, "sha256": m.weights_sha256}
    if m.init_from:
        return {"source": "run", "run": str(m.init_from)}
    if m.pretrained:
        if is_clip(m.name):
            from fgvc.clip.classifier import open_clip_name
            from fgvc.clip.models import cached_weights

            tag = cfg.clip.pretrained
            local = Path(tag).expanduser() if tag else None  # a weights file given as the tag
            found = local if local is not None and local.is_file() else \
                cached_weights(open_clip_name(m.name), tag, cfg.clip.cache_dir or None)
            source = {"source": "open_clip", "name": m.name, "pretrained": cfg.clip.pretrained}
        else:
            found = cached_weights_file(m.name, TORCHVISION_MODELS[m.name][1].url
                                        if m.name in TORCHVISION_MODELS else None)
            source = {"source": "torchvision" if m.name in TORCHVISION_MODELS else "timm", "name": m.name}
        # the file the weights were read from, hashed: a hub tag can be re-uploaded, the bytes cannot
        return {**source, "file": Path(found).name if found else None,
                "sha256": sha256_once(found) if found else None}
    return {"source": "scratch"}


def _trained_channels_last(run_dir: Path) -> bool:
    """metrics.json ``channels_last`` (train.channels_last as it ran); False when missing or unreadable."""
    try:
        return bool(read_metrics(run_dir).get("channels_last"))
    except (UserError, AttributeError):  # damaged, or not a mapping: the weights still load
        return False


def load(run_dir: str | Path, checkpoint: str = "best"):
    """``(model, class_names)``: the run's model on [0, 1] images, in eval mode, on the CPU.

    ``model`` maps (B, 3, H, W) float images in [0, 1] (H = W = the run's data.image_size) to (B, C)
    logits, C = ``len(class_names)``; it normalises inside, in the memory order it trained in.
    ``checkpoint``: ``best`` (the epoch with the best val top-1) or ``last``. UserError (one
    sentence) when ``run_dir`` is not a run folder, its config.yaml, classes.json or checkpoint is
    missing or damaged, or the weights do not fit the model its config names."""
    run_dir = check_run_dir(run_dir)
    cfg = load_config(run_dir)
    class_names = load_class_names(run_dir)
    if is_clip(cfg.model.name):  # QuickGELU or not comes with the pretrained tag, not the weights
        from fgvc.clip.classifier import clip_classifier

        model = clip_classifier(cfg.model.name, len(class_names), cfg.model.dropout, cfg.data.image_size,
                                pretrained=cfg.clip.pretrained if cfg.model.pretrained else "")
    else:
        model = _backbone(cfg, len(class_names), pretrained=False)
        model = build_from_config(cfg.method, model, len(class_names), cfg.model.dropout)  # the head it trained
    state = load_weights(run_dir / "checkpoints" / f"{checkpoint}.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"checkpoint in {run_dir} does not match model {cfg.model.name} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    if _trained_channels_last(run_dir):  # the memory order it trained and was tested in: the same kernels
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), class_names


class Run:
    """A training run directory read once: what every analysis of it needs (eval, predict, explain,
    attack, serve, export, audits), so none of them re-derives the config, the classes, the eval
    pipeline or the splits on its own.

    ``Run(run_dir)`` checks the folder (config.yaml, classes.json) and raises UserError with the fix
    when it is not a run. ``model()`` builds the network from a checkpoint; ``dataset(split)`` is the
    split the run trained and scored on (its data.name, root, val_fraction, classes and seed);
    ``eval_transform`` the one evaluation preprocessing (fgvc.data.transforms); ``precision`` the
    precision it trained in; ``write_json`` / ``write_text`` / ``save_figure`` write atomically into it.
    """

    def __init__(self, run_dir: str | Path, data_root: str | Path | None = None):
        self.dir = check_run_dir(run_dir)
        self.config = load_config(self.dir)
        self.class_names = load_class_names(self.dir)
        self.data_moved = bool(data_root)
        if data_root:  # the run's dataset, read from the folder it moved to (`fgvc eval RUN data.root=NEW`)
            self.config = config_mod.apply(self.config, {"data.root": os.path.abspath(os.path.expanduser(data_root))})

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    @property
    def metrics(self) -> dict:
        """metrics.json ({} while the run has not finished)."""
        return read_metrics(self.dir)

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    @property
    def crop_ratio(self) -> float:
        """data.crop_ratio: 0.875 for a run written before the key existed (the value it was evaluated with)."""
        return self.config.data.crop_ratio

    @property
    def eval_transform(self):
        """PIL image -> float (3, S, S) in [0, 1], S = data.image_size: resize the short side to
        S / data.crop_ratio, centre crop (fgvc.data.transforms.eval_transform)."""
        return eval_transform(self.image_size, self.crop_ratio)

    @property
    def precision(self) -> str:
        """The precision the run trained in (metrics.json), else what train.precision resolves to here."""
        if self.metrics.get("precision"):
            return self.metrics["precision"]
        return resolve_precision(self.config.train.precision, self.config.train.accelerator)

    def dataset(self, split: str, transform=None, root: str | Path | None = None):
        """The run's ``split`` ('train', 'val' or 'test'), through the eval pipeline unless ``transform``
        is given; ``root`` reads the same dataset from another folder (it moved)."""
        cfg = self.config
        if root is not None:
            cfg = config_mod.apply(config_mod.load(self.dir / "config.yaml"), {"data.root": str(root)})
        d = cfg.data
        if not Path(d.root).expanduser().exists():
            if root is not None or self.data_moved:
                raise UserError(f"data.root={d.root} does not exist; give the folder that now holds the {d.name} "
                                f"dataset {self.dir} was trained on")
            raise UserError(f"{self.dir} was trained on {d.name} in {d.root}, which does not exist here; if the "
                            "dataset moved, add data.root=NEW to the command (`fgvc eval RUN data.root=NEW`; "
                            f"explain and attack take it too), else {how_to_get(d.name, d.root)}")
        return config_split(cfg, split, self.eval_transform if transform is None else transform)

    def model(self, checkpoint: str = "best"):
        """The run's network on [0, 1] images, eval mode, on the CPU (``checkpoint``: best or last)."""
        return load(self.dir, checkpoint)[0]

    def write_json(self, name: str, data) -> Path:
        runs.write_json_atomic(self.dir / name, data)
        return self.dir / name

    def write_text(self, name: str, text: str) -> Path:
        runs.write_text_atomic(self.dir / name, text)
        return self.dir / name

    def save_figure(self, fig, name: str, **kwargs) -> Path:
        return runs.save_figure(fig, self.dir / name, **kwargs)


__all__ = ["Run", "build_model", "load", "pretraining_source", "run_task"]
