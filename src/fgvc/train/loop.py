"""The classifier training loop: one function, read top to bottom.

Build (data, model, optimizer) -> for each epoch: train, validate, checkpoint, early-stop
-> test once on the best checkpoint. Lightning Fabric handles device, precision and DDP;
the loop, the tricks and the adversarial step stay visible here.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from fgvc import config as config_mod
from fgvc import errors, runs
from fgvc.data import build_dataset, resolve_num_workers
from fgvc.data.base import check_classes_have_images, drop_unreadable
from fgvc.data.generated import mix_generated
from fgvc.data.seeding import EpochSampler, PerSampleSeeded
from fgvc.data.transforms import decode_min_side, eval_transform, train_transform
from fgvc.errors import UnreadableImage, UserError, message
from fgvc.models import apply_trainable, count_parameters, create_model, train_mode
from fgvc.models.batchnorm import prepare_batchnorm
from fgvc.models.weights import pretraining_source
from fgvc.train.evaluate import evaluate
from fgvc.train.mixing import build_mixing, soft_cross_entropy, soft_targets

RESUME_KEYS = ("epoch", "best_acc", "best_epoch", "history", "optimizer", "scheduler", "train_seconds",
               "train_images")

# Keys `fgvc train --resume RUN key=value` may change once an epoch has finished: each takes effect
# from the next epoch on (the optimizer keys are set in the loaded optimizer and schedule), and the
# change is recorded (metrics.json "resumes", a comment atop config.yaml). Every other key shapes what
# the finished epochs were (model, data, splits, augmentation, seed) and is refused.
RESUMABLE_KEYS = ("train.epochs", "train.patience", "train.batch_size", "train.lr", "train.weight_decay",
                  "train.milestones", "train.gamma", "train.precision", "train.devices", "train.accelerator",
                  "train.channels_last", "data.num_workers", "data.skip_bad_images")
_OPTIMIZER_KEYS = ("train.lr", "train.weight_decay", "train.milestones", "train.gamma")
_TRAINING_ONLY_KEYS = (*_OPTIMIZER_KEYS, "train.batch_size")  # the others also reach the final test


def resolve_precision(precision: str, accelerator: str) -> str:
    """The precision that runs. 'auto' -> bf16-mixed on CUDA with bf16, and on CPUs with bf16
    instructions (measured faster there, see benchmarks/results/loop_overhead.md); 32-true otherwise.
    16-mixed on a CPU runs as bf16-mixed (CPU autocast has no fp16; Lightning switches it too), so
    metrics.json records bf16-mixed."""
    if precision != "auto":
        precision = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}.get(precision, precision)
        return "bf16-mixed" if precision == "16-mixed" and _runs_on_cpu(accelerator) else precision
    use_cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if _cpu_has_bf16() else "32-true"


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _runs_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's accelerator choice lands on the CPU (auto prefers CUDA, then MPS)."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available() and not _mps_available())


def check_accelerator(accelerator: str, devices: int) -> None:
    """A requested device that is not there: one sentence (Lightning raises a traceback)."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator == "cuda" or (accelerator in ("gpu", "auto") and cuda):
        if not cuda:
            raise UserError(f"train.accelerator={accelerator} but this machine has no usable CUDA GPU; "
                            "use train.accelerator=cpu (or auto)")
        if devices > cuda:
            raise UserError(f"train.devices={devices} but this machine has {cuda} CUDA GPU{'s' * (cuda > 1)}; "
                            f"set train.devices={cuda} or fewer")
    elif accelerator in ("mps", "gpu"):
        if not _mps_available():
            raise UserError(f"train.accelerator={accelerator} but this machine has no usable GPU (neither CUDA "
                            "nor Apple MPS); use train.accelerator=cpu (or auto)")
        if devices > 1:
            raise UserError(f"train.devices={devices} with train.accelerator={accelerator}: Apple MPS is one "
                            "device; set train.devices=1")


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: config_mod.Config, num_classes: int):
    """Backbone with a fresh head, optionally initialised from an earlier run, then frozen by spec."""
    model = create_model(cfg.model.name, num_classes, pretrained=cfg.model.pretrained,
                         dropout=cfg.model.dropout, image_size=cfg.data.image_size)
    if cfg.model.weights:  # a local file (fgvc.models.weights): its origin goes into config.yaml and metrics.json
        from fgvc.models.weights import load_weights_file

        origin = load_weights_file(model, cfg.model.weights, expected_sha256=cfg.model.weights_sha256)
        cfg.model.weights_sha256 = origin["sha256"]
    if cfg.model.init_from:
        source_cfg = runs.load_config(cfg.model.init_from)
        if source_cfg.model.name != cfg.model.name:
            raise UserError(f"model.init_from={cfg.model.init_from} holds a {source_cfg.model.name}, "
                            f"not a {cfg.model.name}; set model.name={source_cfg.model.name}")
        state = runs.load_weights(Path(cfg.model.init_from) / "checkpoints" / "best.safetensors")
        head_prefix = f"net.{model.head_path}."
        # the head is sized for the source classes: keep the new one
        backbone = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
        missing, unexpected = model.load_state_dict(backbone, strict=False)
        if unexpected or any(not k.startswith(head_prefix) for k in missing):
            raise UserError(f"weights in {cfg.model.init_from} do not fit {cfg.model.name}")
    apply_trainable(model, cfg.model.trainable)
    return model


def _loader(dataset, batch_size, sampler, num_workers, drop_last=False, persistent=True):
    # Workers may persist across epochs: no randomness lives in them (see fgvc.data.seeding).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      persistent_workers=persistent and num_workers > 0)


class TrainBatches(Sampler):
    """Batches of ``sampler`` (a sampler of one process's shard) as DataLoader's batch_sampler, with a
    last batch that every step can train on: trimmed to an even size when Mixup/CutMix pair its
    images (``even``), and dropped when it would hold fewer than ``least`` images (a batch of one
    image has no batch statistics for a training BatchNorm). Shards have equal lengths, so every
    process takes the same number of steps."""

    def __init__(self, sampler: Sampler, batch_size: int, even: bool = False, least: int = 1):
        self.sampler, self.batch_size, self.even, self.least = sampler, batch_size, even, least

    def _last(self, size: int) -> int:
        size -= size % 2 if self.even else 0
        return size if size >= self.least else 0

    def __iter__(self):
        batch = []
        for key in self.sampler:
            batch.append(key)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        size = self._last(len(batch))
        if size:
            yield batch[:size]

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + bool(self._last(rest))


def _batchnorm_trains(model: torch.nn.Module) -> bool:
    """Whether a BatchNorm layer normalises with batch statistics in training (not frozen by
    model.batchnorm or model.trainable): such a layer cannot train on a batch of one image."""
    train_mode(model)
    trains = any(isinstance(m, _BatchNorm) and m.training for m in model.modules())
    model.eval()
    return trains


def _all_or_none(fabric: Fabric, batches):
    """``batches``, in step with the other processes: when one process meets a UserError (an unreadable
    image in its shard), every process raises that sentence instead of the others dying in a
    collective (a gloo/NCCL traceback). Shards of different lengths (val/test) keep syncing until all
    are done. One process: the batches as they are."""
    if fabric.world_size == 1:
        yield from batches
        return
    it, done = iter(batches), False
    while True:
        item, error = None, None
        if not done:
            try:
                item = next(it)
            except StopIteration:
                done = True
            except UserError as e:
                error = e
        flags = fabric.all_reduce(torch.tensor([float(error is not None), float(not done)], device=fabric.device),
                                  reduce_op="sum")
        failed, busy = (float(v) for v in flags)
        if failed:
            _raise_first_error(error)
        if not busy:
            return
        if not done:
            yield item


def _raise_first_error(error: BaseException | None) -> None:
    """Every process raises the error of the lowest-ranked process that had one."""
    sent = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(sent, (type(error).__name__, message(error)) if error is not None else None)
    kind, text = next(s for s in sent if s is not None)
    kinds = {c.__name__: c for c in (UserError, errors.UnreadableImage, errors.ImageTooLarge)}
    raise kinds.get(kind, UserError)(text) from None


def train(cfg: config_mod.Config, run_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True) -> Path:
    """Train a classifier as ``cfg`` says; returns the run directory it wrote."""
    try:
        return _train(cfg, run_dir, resume, progress)
    except torch.cuda.OutOfMemoryError:
        bs = cfg.train.batch_size
        fix = f"lower train.batch_size (for example {bs // 2}) or data.image_size" if bs > 1 else \
            "lower data.image_size or train fewer layers (model.trainable)"
        raise UserError(f"the GPU ran out of memory training {cfg.model.name} on {cfg.data.image_size} px images "
                        f"in batches of {bs}; {fix}, or use train.precision=bf16-mixed; finished epochs are kept: "
                        "`fgvc train --resume RUN_DIR key=value` continues with the new setting") from None
    except UnreadableImage as e:
        raise UnreadableImage(f"{message(e)}; `fgvc data info {cfg.data.name} --root {cfg.data.root} --check` lists "
                              "every unreadable file, and data.skip_bad_images=true trains without them") from None


def resume_changes(cfg: config_mod.Config, run_dir: str | Path) -> dict[str, list]:
    """{key: [value in the run's config.yaml, value now]} for the keys ``cfg`` changes on resume. Once an
    epoch has finished, a key outside RESUMABLE_KEYS is refused: it could not take effect, and
    config.yaml would claim a value the finished epochs never ran with."""
    run_dir = runs.check_run_dir(run_dir)
    if not (run_dir / "checkpoints" / "last_state.pt").is_file():
        return {}  # no finished epoch: the run starts over, every setting takes effect
    before = runs.load_config(run_dir)
    changed = {k: [config_mod.get(before, k), config_mod.get(cfg, k)] for k in config_mod.all_keys()
               if config_mod.get(before, k) != config_mod.get(cfg, k)}
    refused = [k for k in changed if k not in RESUMABLE_KEYS]
    if refused:
        what = ", ".join(f"{k}={changed[k][1]} (the run has {k}={changed[k][0]})" for k in refused)
        raise UserError(f"--resume cannot change {what}: the epochs {run_dir} has finished ran with the run's "
                        f"value; drop the override, or start a new run with it (on resume only "
                        f"{', '.join(RESUMABLE_KEYS)} can change)")
    return changed


def _train(cfg: config_mod.Config, run_dir: str | Path | None, resume: bool, progress: bool) -> Path:
    t_start = time.perf_counter()
    config_mod.check_training(cfg)
    changes = resume_changes(cfg, run_dir) if resume else {}
    check_accelerator(cfg.train.accelerator, cfg.train.devices)
    precision = resolve_precision(cfg.train.precision, cfg.train.accelerator)
    fabric = Fabric(accelerator=cfg.train.accelerator, devices=cfg.train.devices, precision=precision)
    fabric.launch()
    if precision == "bf16-mixed" and cfg.train.precision in ("16", "16-mixed"):
        fabric.print(f"train.precision={cfg.train.precision} runs as bf16-mixed on a CPU (CPU autocast has no fp16); "
                     "metrics.json records bf16-mixed")
    seed_all(cfg.train.seed)

    # --- data: train/val/test; model selection only ever looks at val ---
    d = cfg.data
    train_ds = build_dataset(d.name, d.root, "train", train_transform(
        d.image_size, cfg.aug.geometric, cfg.aug.rotation, cfg.aug.cutout, cfg.aug.cutout_size),
        d.val_fraction, cfg.train.seed)
    val_ds = build_dataset(d.name, d.root, "val", eval_transform(d.image_size), d.val_fraction, cfg.train.seed)
    test_ds = build_dataset(d.name, d.root, "test", eval_transform(d.image_size), d.val_fraction, cfg.train.seed)
    skipped = 0
    if d.skip_bad_images:
        # Decoded once, before training (not dropped as met), so every epoch and every resumed run
        # sees the same images and the count is exact; splits were drawn before, so val stays put.
        bad = [b for ds in (train_ds, val_ds, test_ds) for b in drop_unreadable(ds)]
        skipped = len(bad)
        for _, why in bad[:10]:
            fabric.print(f"skipped: {why}")
        if skipped:
            fabric.print(f"skipped {skipped} unreadable images (data.skip_bad_images=true)")
        check_classes_have_images(train_ds.samples, train_ds.class_names,
                                  f"{train_ds.root} once its unreadable images are left out", "train")
    train_ds = mix_generated(train_ds, d.generated_root, d.train_source, d.generated_ratio, cfg.train.seed)
    # decode large JPEGs at a reduced DCT scale when the pipeline would shrink them anyway
    train_ds.decode_min_side = decode_min_side(d.image_size, cfg.aug.geometric)
    val_ds.decode_min_side = test_ds.decode_min_side = decode_min_side(d.image_size)
    class_names = train_ds.class_names
    num_classes = len(class_names)
    if len(val_ds) == 0:
        raise UserError("the validation split is empty; set data.val_fraction above 0 (for example 0.1)")

    # --- model, optimizer, schedule ---
    model = build_model(cfg, num_classes)
    # BatchNorm folded into the convolutions (TensorFlow Lite weights) has placeholder statistics:
    # re-estimate them on training images, or keep BatchNorm frozen (fgvc.models.batchnorm); a resumed
    # run's statistics come with its checkpoint
    bn_mode = prepare_batchnorm(model, cfg, lambda: build_dataset(
        d.name, d.root, "train", eval_transform(d.image_size), d.val_fraction, cfg.train.seed),
        measure=not resume, progress=progress and fabric.is_global_zero)
    bn_trains = _batchnorm_trains(model)
    if bn_trains and cfg.train.batch_size == 1:
        raise UserError(f"train.batch_size=1 cannot train {cfg.model.name}: its BatchNorm layers need at least 2 "
                        "images per batch; set train.batch_size=2 or more (or model.batchnorm=frozen)")
    if cfg.train.channels_last:  # convolutions follow their weights' memory order (oneDNN and cuDNN)
        model = model.to(memory_format=torch.channels_last)
    counts = count_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]  # frozen weights never reach AdamW
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.train.milestones,
                                                     gamma=cfg.train.gamma)
    raw_model = model
    model, optimizer = fabric.setup(model, optimizer)

    mixing = build_mixing(cfg.aug.mixup_alpha, cfg.aug.cutmix_alpha, cfg.aug.label_smoothing, num_classes)
    workers = resolve_num_workers(d.num_workers, fabric.device.type == "cuda")
    generator = torch.Generator()
    rank, world = fabric.global_rank, fabric.world_size
    if world > min(len(val_ds), len(test_ds)):
        raise UserError(f"train.devices={world} is more than the {min(len(val_ds), len(test_ds))} images of the "
                        "smallest evaluation split; every process needs at least one: use fewer devices")
    # Several devices (DDP): train.batch_size is per device; each process trains on its own
    # shuffled shard (reshuffled per epoch from the seed, so resume stays exact) and evaluates
    # an unpadded shard of val/test whose sums are added up across processes.
    train_sampler = EpochSampler(DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.train.seed)
                                 if world > 1 else RandomSampler(train_ds, generator=generator))
    # timm's Mixup needs even batches; a training BatchNorm needs two images (decided per shard)
    train_batches = TrainBatches(train_sampler, cfg.train.batch_size, even=mixing is not None,
                                 least=2 if bn_trains or mixing is not None else 1)
    if len(train_batches) == 0:
        raise UserError(f"the train split of {d.name} in {d.root} has {len(train_sampler)} image per process, "
                        "and a training batch needs 2 (BatchNorm or Mixup/CutMix); add images or use fewer "
                        "train.devices")
    train_loader = fabric.setup_dataloaders(
        DataLoader(PerSampleSeeded(train_ds, cfg.train.seed), batch_sampler=train_batches, num_workers=workers,
                   pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0),
        use_distributed_sampler=False)
    # every world-th image from rank: the shards cover val/test exactly once, without the
    # padding DistributedSampler adds to even them out (repeated images would bias the scores)
    val_loader, test_loader = fabric.setup_dataloaders(
        _loader(val_ds, cfg.train.batch_size * 2, range(rank, len(val_ds), world), workers),
        _loader(test_ds, cfg.train.batch_size * 2, range(rank, len(test_ds), world), workers,
                persistent=False),  # used once
        use_distributed_sampler=False)

    def sum_over_processes(t: torch.Tensor) -> torch.Tensor:
        return fabric.all_reduce(t.to(fabric.device), reduce_op="sum").cpu() if world > 1 else t

    def together(batches):  # an unreadable image in one process's shard stops every process with its sentence
        return _all_or_none(fabric, batches)

    adv_loss = None
    if cfg.adv.attack != "none":
        from fgvc.robust.training import adversarial_loss as adv_loss
        from fgvc.robust.training import catastrophic_overfitting, robust_accuracy_probe
    probes: list[dict] = []

    # --- run directory: fresh, or resumed from its last completed epoch ---
    if resume:
        run_dir = runs.check_run_dir(run_dir)
        if fabric.is_global_zero:
            for folder in (run_dir, run_dir / "checkpoints"):  # temp files of writes that a kill cut short
                runs.remove_partial_writes(folder)
        if (run_dir / "classes.json").is_file() and runs.load_class_names(run_dir) != class_names:
            raise UserError(f"the classes of {d.name} in {d.root} differ from {run_dir / 'classes.json'}; "
                            "resume with the dataset the run started on")
    else:
        if run_dir is None:  # one new folder, named by the first process
            run_dir = fabric.broadcast(runs.new_run_dir(cfg.out, cfg.model.name, d.name) if rank == 0 else None)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoints"
    history: list[dict] = []
    resumes: list[dict] = []  # settings changed on resume: {"epoch": first epoch run with them, "changed": ...}
    start_epoch, best_acc, best_epoch = 0, -1.0, -1
    train_seconds, train_images = 0.0, 0
    if resume and (ckpt / "last_state.pt").is_file():
        state = runs.load_state(ckpt / "last_state.pt", required=RESUME_KEYS)
        # the state carries its own epoch's weights: last.safetensors is one epoch newer when a run
        # died between the two writes (states of older fgvc versions lack them)
        weights = state["model"] if "model" in state else runs.load_weights(ckpt / "last.safetensors")
        try:
            raw_model.load_state_dict(weights)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{ckpt / 'last_state.pt'} does not fit {cfg.model.name} as configured in "
                            f"{run_dir / 'config.yaml'} ({e.__class__.__name__}); resume with the model, "
                            "model.trainable and optimizer settings the run started with") from None
        start_epoch, best_acc, best_epoch = state["epoch"] + 1, state["best_acc"], state["best_epoch"]
        probes = [{k[len("probe_"):]: v for k, v in h.items() if k.startswith("probe_")} for h in state["history"]]
        history, train_seconds, train_images = state["history"], state["train_seconds"], state["train_images"]
        resumes = list(state.get("resumes", []))
        if changes:
            training_only = [k for k in changes if k in _TRAINING_ONLY_KEYS]
            if training_only and _stops_before(start_epoch, best_epoch, cfg.train):
                raise UserError(f"{run_dir} has finished training ({start_epoch} epochs), so "
                                f"{', '.join(f'{k}={changes[k][1]}' for k in training_only)} would not take "
                                f"effect; add train.epochs={start_epoch + 1} or more to train on with it")
            if any(k in changes for k in _OPTIMIZER_KEYS):
                _set_optimizer(optimizer, scheduler, cfg.train)
            resumes.append({"epoch": start_epoch + 1, "changed": changes})
    # config.yaml on resume: with its overrides, and a comment naming each change and its first epoch
    _first_process_writes(fabric, runs.write_text_atomic, run_dir / "config.yaml", _config_text(cfg, resumes))
    _first_process_writes(fabric, runs.write_json_atomic, run_dir / "classes.json", class_names)
    fabric.print(f"run directory: {run_dir}")

    for epoch in range(start_epoch, cfg.train.epochs):
        if _stops_before(epoch, best_epoch, cfg.train):
            break  # early stopping: val accuracy has not improved for `patience` epochs
        # Seeding per epoch makes an epoch's shuffling, augmentation and dropout a function of
        # (seed, epoch) alone, so a run resumed at an epoch boundary ends where an uninterrupted one does.
        seed_all(cfg.train.seed * 1000 + epoch + 1_000_003 * rank)  # each process its own augmentations
        generator.manual_seed(cfg.train.seed * 1000 + epoch)
        train_sampler.use_epoch(epoch)
        train_mode(model)  # frozen BatchNorm stays in eval mode
        t0 = time.perf_counter()
        # sums stay on the device (no .item() per step); the finiteness check below is the one sync
        loss_sum = torch.zeros((), dtype=torch.float64, device=fabric.device)
        correct, seen = torch.zeros((), dtype=torch.int64, device=fabric.device), 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=not progress or not fabric.is_global_zero)
        for step, (x, y) in enumerate(together(bar)):
            if mixing is not None:
                x, target = mixing(x, y)  # label smoothing is folded into the soft targets
            else:
                target = soft_targets(y, num_classes, cfg.aug.label_smoothing)
            if adv_loss is not None:
                # Eq. 1 of the seed: w * L(x) + (1 - w) * L(x_adv), the attack run on the current model.
                # Train accuracy is read from the first train-mode forward: the clean one (the
                # adversarial one when w = 0); the attack's own search runs in eval mode.
                train_logits = []

                def loss_fn(out, tgt, sink=train_logits):
                    if raw_model.training:
                        sink.append(out.detach())
                    return soft_cross_entropy(out, tgt)

                with fabric.autocast():
                    loss = adv_loss(model, x, target, loss_fn, cfg.adv.attack, cfg.adv.eps,
                                    cfg.adv.alpha or None, cfg.adv.steps, cfg.adv.loss_weight,
                                    attack_model=raw_model)
                logits = train_logits[0]
            else:
                logits = model(x)
                loss = soft_cross_entropy(logits, target)
            finite = torch.isfinite(loss.detach()).float()
            if world > 1:  # all processes stop together, or the others would wait forever
                finite = fabric.all_reduce(finite, reduce_op="min")
            if not finite:
                own = loss.item()
                what = own if not math.isfinite(own) else "nan or inf on another process"
                raise UserError(f"the training loss became {what} at epoch {epoch + 1} step {step + 1}; "
                                f"lower train.lr (now {cfg.train.lr}); {_kept(history, ckpt)}")
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            # Train accuracy under mixing: agreement with the label of the larger mixing weight
            # (the argmax of the soft target); without mixing it is plain accuracy.
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.argmax(1) == target.argmax(1)).sum()
            seen += y.shape[0]
            if progress and fabric.is_global_zero and step % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
        loss_sum, correct, seen = sum_over_processes(torch.stack(
            [loss_sum, correct.double(), torch.tensor(seen, dtype=torch.float64, device=fabric.device)])).tolist()
        seen = int(seen)
        epoch_train_seconds = time.perf_counter() - t0
        train_seconds += epoch_train_seconds
        train_images += seen
        # Through the DDP wrapper on purpose: its first forward after training broadcasts the
        # BatchNorm statistics of process 0, whose weights become the checkpoint.
        val = evaluate(model, val_loader, autocast=fabric.autocast, reduce=sum_over_processes, batches=together)
        if not math.isfinite(val["loss"]):  # diverged weights must never become a checkpoint
            raise UserError(f"the validation loss became {val['loss']} after epoch {epoch + 1}: the weights "
                            f"diverged; lower train.lr (now {cfg.train.lr}); {_kept(history, ckpt)}")
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trained at: read before the schedule steps
        scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
               "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr,
               "seconds": round(time.perf_counter() - t0, 3)}
        if adv_loss is not None:
            # PGD vs FGSM accuracy on one validation batch makes catastrophic overfitting visible
            xb, yb = next(iter(val_loader))[:2]
            with fabric.autocast():
                probe = robust_accuracy_probe(raw_model, xb, yb, cfg.adv.eps)
            probes.append(probe)
            row.update({f"probe_{k}": v for k, v in probe.items()})
            if catastrophic_overfitting(probes):
                fabric.print(f"warning: PGD accuracy collapsed to {probe['pgd']:.3f} while FGSM accuracy rose to "
                             f"{probe['fgsm']:.3f}: catastrophic overfitting; try adv.attack=rs-fgsm or pgd, "
                             "or a smaller adv.eps")
        history.append(row)
        fabric.print(f"epoch {epoch + 1:3d}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
                     f"val loss {val['loss']:.4f} acc {val['acc']:.4f}  ({row['seconds']:.1f}s)")
        improved = val["acc"] > best_acc  # the same on every process: val sums are shared
        if improved:
            best_acc, best_epoch = val["acc"], epoch
        state = {"epoch": epoch, "best_acc": best_acc, "best_epoch": best_epoch, "history": history,
                 "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "train_seconds": train_seconds, "train_images": train_images,
                 "resumes": resumes}
        fields = [*runs.HISTORY_FIELDS, *(f"probe_{k}" for k in ("clean", "fgsm", "pgd") if adv_loss)]
        _first_process_writes(fabric, _commit_epoch, run_dir, state, improved, fields)

    # --- test once, on the best checkpoint ---
    raw_model.load_state_dict(runs.load_weights(ckpt / "best.safetensors"))
    test = evaluate(model, test_loader, autocast=fabric.autocast, progress=progress and fabric.is_global_zero,
                    desc="test", reduce=sum_over_processes, batches=together)
    best = history[best_epoch] if 0 <= best_epoch < len(history) else history[-1]
    metrics = {
        "train_acc": best["train_acc"], "val_acc": best["val_acc"], "test_acc": test["acc"],
        "test_top5": test["top5"], "train_loss": best["train_loss"], "val_loss": best["val_loss"],
        "test_loss": test["loss"], "best_epoch": best_epoch + 1, "epochs_run": len(history),
        "seconds": round(time.perf_counter() - t_start, 2) if not resume else None,
        "train_seconds": round(train_seconds, 2),
        "train_images_per_second": round(train_images / train_seconds, 2) if train_seconds else 0.0,
        **counts, "pretrained": pretraining_source(cfg), "batchnorm": bn_mode, "precision": precision,
        "device": str(fabric.device),
        "devices": world, "num_classes": num_classes, "train_images": len(train_ds), "val_images": len(val_ds),
        "test_images": len(test_ds), "skipped_images": skipped, "resumes": resumes,
    }
    from fgvc.protocol import training_protocol  # the choices behind these numbers (docs/evaluation.md)

    metrics["protocol"] = training_protocol(cfg, train_ds, val_ds, test_ds, precision=precision,
                                            device=metrics["device"], pretrained=metrics["pretrained"])
    if metrics["seconds"] is None:  # resumed: wall time of this process plus the earlier ones' training
        metrics["seconds"] = round(time.perf_counter() - t_start + train_seconds, 2)
    _first_process_writes(fabric, _plot_curves, history, run_dir / "curves.png")
    _first_process_writes(fabric, runs.write_json_atomic, run_dir / "metrics.json", metrics)
    return run_dir  # metrics.json exists for every process by now


def _stops_before(epoch: int, best_epoch: int, t: config_mod.TrainConfig) -> bool:
    """Whether training ends before ``epoch`` (0-based): all epochs done, or early stopping (val accuracy
    has not improved for ``patience`` epochs)."""
    return epoch >= t.epochs or (best_epoch >= 0 and t.patience > 0 and epoch - best_epoch > t.patience)


def _set_optimizer(optimizer, scheduler, t: config_mod.TrainConfig) -> None:
    """Resume with new optimizer settings: the loaded AdamW and MultiStepLR states carry the old ones.
    The rate becomes what the new schedule gives at this epoch."""
    scheduler.milestones, scheduler.gamma = Counter(t.milestones), t.gamma
    scheduler.base_lrs = [t.lr] * len(optimizer.param_groups)
    lr = t.lr * t.gamma ** bisect.bisect_right(sorted(t.milestones), scheduler.last_epoch)
    for group in optimizer.param_groups:
        group.update(lr=lr, initial_lr=t.lr, weight_decay=t.weight_decay)
    scheduler._last_lr = [lr] * len(optimizer.param_groups)  # what get_last_lr() reports


def _config_text(cfg: config_mod.Config, resumes: list[dict]) -> str:
    """config.yaml: the settings, after a comment per resume that changed some, so that the file never
    claims a value for epochs that ran with another."""
    lines = [f"# from epoch {r['epoch']} on (fgvc train --resume): "
             + ", ".join(f"{k}={new} (earlier epochs: {old})" for k, (old, new) in r["changed"].items()) + "\n"
             for r in resumes]
    return "".join(lines) + config_mod.dump(cfg)


def _commit_epoch(run_dir: Path, state: dict, improved: bool, history_fields: list[str]) -> None:
    ckpt = run_dir / "checkpoints"
    if improved:
        runs.save_weights(state["model"], ckpt / "best.safetensors")
    # last_state.pt commits the epoch: weights, optimizer and history in one atomic file
    runs.save_state(state, ckpt / "last_state.pt")
    runs.save_weights(state["model"], ckpt / "last.safetensors")
    runs.write_csv_atomic(run_dir / "history.csv", state["history"], history_fields)


def _first_process_writes(fabric: Fabric, write, *args) -> None:
    """``write(*args)`` (a file of the run directory) on the first process only, then every process
    learns whether it worked: if it failed, all stop together instead of the others waiting at the
    next collective until the process group times out."""
    error = None
    if fabric.is_global_zero:
        try:
            write(*args)
        except BaseException as e:  # re-raised below, after the others have been told
            error = e
    if fabric.world_size > 1:
        failed = fabric.all_reduce(torch.tensor(float(error is not None), device=fabric.device), reduce_op="max")
        if failed and error is None:
            raise UserError("process 0 could not write the run directory (its message above says why); "
                            "every process stopped")
    if error is not None:
        raise error


def is_main_process() -> bool:
    """False in the extra processes of a multi-device run, which should stay quiet."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _kept(history: list[dict], ckpt: Path) -> str:
    """Where the last good checkpoint is, for messages that stop a run."""
    if not history:
        return "no checkpoint was written"
    return f"the checkpoints of epoch {history[-1]['epoch']} (the last good one) are in {ckpt}"


def _plot_curves(history: list[dict], path: Path) -> None:
    """curves.png of a run directory: loss and accuracy per epoch, train vs val (see ``_curves_figure``)."""
    runs.save_figure(_curves_figure(history, Path(path).parent.resolve().name), path, tight=False)


def _curves_figure(history: list[dict], run_name: str):
    """Loss (log axis, so an epoch-1 loss of 94 does not flatten the rest) and accuracy per epoch, train
    vs val, on integer epoch ticks with a marker per epoch (a 1-epoch run is a dot, not nothing); the
    best validation epoch (the checkpoint kept) and each learning-rate drop are marked."""
    import math

    from matplotlib.figure import Figure  # not pyplot: a library must not switch the user's backend
    from matplotlib.ticker import MaxNLocator

    def column(key):
        return [float(h[key]) if h.get(key) not in (None, "") else math.nan for h in history]

    epochs = [int(h["epoch"]) for h in history]
    losses = {"train": column("train_loss"), "val": column("val_loss")}
    accs = {"train": column("train_acc"), "val": column("val_acc")}
    marker = {"marker": "o", "markersize": 3 if len(epochs) > 30 else 5}
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for label, values in losses.items():
        ax1.plot(epochs, values, label=label, **marker)
    for label, values in accs.items():
        ax2.plot(epochs, values, label=label, **marker)
    finite = [v for values in losses.values() for v in values if math.isfinite(v)]
    log = bool(finite) and min(finite) > 0
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss" + (" (log scale)" if log else ""), title="loss")
    if log:
        ax1.set_yscale("log")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="top-1 accuracy", ylim=(0, 1.02))

    val = [(v, e) for v, e in zip(accs["val"], epochs) if math.isfinite(v)]
    best = None
    if val:  # the loop keeps the first epoch of the highest val accuracy
        best_acc = max(v for v, _ in val)
        best = next(e for v, e in val if v == best_acc)
        for ax in (ax1, ax2):
            ax.axvline(best, color="tab:green", linestyle="--", linewidth=1,
                       label=f"best val (epoch {best})" if ax is ax2 else None)
        ax2.plot([best], [best_acc], marker="*", markersize=13, color="tab:green", linestyle="none")
    lrs = column("lr")
    drops = [(e, old, new) for e, old, new in zip(epochs[1:], lrs, lrs[1:])
             if math.isfinite(old) and math.isfinite(new) and new < old]
    for i, (e, _old, new) in enumerate(drops):
        for ax in (ax1, ax2):
            ax.axvline(e - 0.5, color="0.4", linestyle=":", linewidth=1,
                       label="lr drop" if ax is ax2 and i == 0 else None)
        ax2.annotate(f"lr {new:.2g}", (e - 0.5, 0.02), rotation=90, fontsize=7, color="0.3",
                     ha="right", va="bottom")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n = len(epochs)
    summary = f"best val accuracy {max(v for v, _ in val):.3f} at epoch {best}" if val else "no validation"
    fig.suptitle(f"{run_name}: training curves, {n} epoch{'s' if n != 1 else ''} ({summary})", fontsize=10)
    fig.tight_layout()
    return fig


def metrics_table(metrics: dict) -> str:
    """A short human-readable table of the headline metrics."""
    rows = [("train acc", "train_acc"), ("val acc", "val_acc"), ("test acc", "test_acc"),
            ("test top-5", "test_top5"), ("best epoch", "best_epoch"), ("epochs run", "epochs_run"),
            ("seconds", "seconds"), ("train img/s", "train_images_per_second"),
            ("params (trainable)", "params_trainable")]
    lines = []
    for label, key in rows:
        v = metrics.get(key)
        text = f"{v:.4f}" if isinstance(v, float) and key.endswith(("acc", "top5")) else str(v)
        lines.append(f"  {label:<20} {text}")
    return "\n".join(lines)


__all__ = ["train", "build_model", "metrics_table", "resolve_precision", "is_main_process"]
