"""The classifier training loop, read top to bottom in ``fit``.

Build (splits, tricks, model, optimizer, loaders) -> for each epoch: train, validate, checkpoint,
early-stop -> test once on the best checkpoint. Lightning Fabric handles device, precision and DDP;
the tricks (``train/tricks.py``) and the adversarial step stay visible in ``train_one_epoch``. The
pieces live beside it: ``splits.py`` (data and loaders), ``state.py`` (``TrainState``, resume,
commits), ``devices.py`` (device and precision), ``summary.py`` (curves.png, the metrics table).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from fgvc import config as config_mod
from fgvc import runs
from fgvc.api import build_model, pretraining_source, run_task
from fgvc.data import build_dataset
from fgvc.data.cache import wait_hint
from fgvc.data.transforms import eval_transform
from fgvc.devices import (
    check_accelerator,
    is_main_process,
    quiet_fabric,
    resolve_channels_last,
    resolve_precision,
)
from fgvc.errors import Interrupted, UnreadableImage, UserError, message
from fgvc.methods import describe as describe_method
from fgvc.models import count_parameters, train_mode
from fgvc.models.batchnorm import prepare_batchnorm
from fgvc.protocol import training_protocol
from fgvc.train.checks import check_training
from fgvc.train.evaluate import evaluate
from fgvc.train.loggers import ExperimentLog, open_loggers, optimizer_steps
from fgvc.train.optim import base_lr, build_optimizer, build_scheduler
from fgvc.train.splits import Splits, all_or_none, build_loaders, build_splits
from fgvc.train.state import (
    TrainState,
    commit_epoch,
    config_text,
    finished_run,
    first_process_writes,
    kept,
    open_run_dir,
    restore,
    resume_changes,
    with_absolute_paths,
)
from fgvc.train.summary import metrics_table, plot_curves
from fgvc.train.threads import ThreadGovernor
from fgvc.train.tricks import Tricks, build_tricks, train_inputs


def train(cfg: config_mod.Config, run_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True, after: Callable[[Path], object] | None = None) -> Path:
    """Train a classifier as ``cfg`` says; returns the run directory it wrote (config.yaml,
    classes.json, history.csv, metrics.json, curves.png, checkpoints/). ``resume`` continues
    ``run_dir`` from its last finished epoch (a finished run asked for no further epoch is left as it is).
    ``after(run_dir)``: a step the first process runs on the finished run (CLIP fine-tuning scores WiSE-FT
    there, fgvc.clip.finetune.after_training). Raises UserError for what the user can fix."""
    if resume:  # a finished run asked for no further epoch: nothing is tested or written again
        note = finished_run(cfg, run_dir, resume_changes(cfg, run_dir))
        if note:
            print(f"note: {note}", file=sys.stderr)
            return runs.check_run_dir(run_dir)
    opened: list[Path] = []  # the run directory, once fit has named it: a ^C message says which to resume
    try:
        run_dir = fit(cfg, run_dir, resume, progress, on_open=opened.append)
        if after is not None and is_main_process():
            after(run_dir)
        return run_dir
    except torch.cuda.OutOfMemoryError:
        bs = cfg.train.batch_size
        fix = f"lower train.batch_size (for example {bs // 2}) or data.image_size" if bs > 1 else \
            "lower data.image_size or train fewer layers (model.trainable)"
        raise UserError(f"the GPU ran out of memory training {cfg.model.name} on {cfg.data.image_size} px images "
                        f"in batches of {bs}; {fix}, or use train.precision=bf16-mixed; finished epochs are kept: "
                        "`fgvc train --resume RUN_DIR key=value` continues with the new setting") from None
    except KeyboardInterrupt:
        if opened and not isinstance(sys.exc_info()[1], Interrupted):
            raise Interrupted(opened[0]) from None
        raise
    except UnreadableImage as e:
        raise UnreadableImage(f"{message(e)}; `fgvc data info {cfg.data.name} --root {cfg.data.root} --check` lists "
                              "every unreadable file, and data.skip_bad_images=true trains without them") from None


def fit(cfg: config_mod.Config, run_dir: str | Path | None, resume: bool, progress: bool, on_open=None) -> Path:
    t_start = time.perf_counter()
    cfg, changes = preflight(cfg, run_dir, resume)
    fabric, precision = setup_fabric(cfg)
    seed_all(cfg.train.seed)
    quiet = not (progress and fabric.is_global_zero)

    # --- data and tricks: model selection only ever looks at val ---
    splits = build_splits(cfg, train_inputs(cfg), log=fabric.print)
    class_names = splits.class_names
    tricks = build_tricks(cfg, len(class_names), rank=fabric.global_rank,
                          reduce=(lambda t: fabric.all_reduce(t, reduce_op="sum")) if fabric.world_size > 1 else None)

    # --- model, optimizer, schedule, loaders ---
    model, bn_mode, bn_trains = setup_model(cfg, class_names, resume, progress=not quiet)
    channels_last = resolve_channels_last(cfg.train.channels_last, model, fabric.device, precision)
    if channels_last:  # convolutions follow their weights' memory order (oneDNN and cuDNN)
        model = model.to(memory_format=torch.channels_last)
    counts = count_parameters(model)
    tricks.criterion.attach(model)  # the center loss reads the features the final linear layer gets
    optimizer = build_optimizer(cfg, model)  # AdamW; frozen weights never reach it
    raw_model = model
    if cfg.train.compile:  # Fabric wraps the module and compiles it again (lightning_fabric's setup)
        model = torch.compile(model)
    model, optimizer = fabric.setup(model, optimizer)
    loaders = build_loaders(fabric, splits, cfg, even=tricks.even_batches,
                            least=2 if bn_trains or tricks.even_batches else 1, progress=not quiet)
    scheduler, per_step = build_scheduler(cfg, optimizer, len(loaders.train))
    scores = {"autocast": fabric.autocast, "reduce": partial(sum_over_processes, fabric),
              "batches": partial(all_or_none, fabric)}

    # --- run directory: fresh, or resumed from its last finished epoch ---
    run_dir, state, log = start_run(fabric, cfg, run_dir, resume, changes, class_names, raw_model, optimizer,
                                    scheduler, precision, len(loaders.train) if per_step else None, on_open)
    ckpt = run_dir / "checkpoints"
    tricks.criterion.load_state_dict(state.losses, fabric.device)  # the center loss's centres, when resumed

    # on a CPU, the thread pool follows the cores other jobs leave free (OpenMP threads that spin for a
    # descheduled peer collapse a job 3-8x); once per run, so its ceiling is the count the run started with
    governor = ThreadGovernor() if fabric.device.type == "cpu" and cfg.train.threads == "auto" else None
    for epoch in range(first_epoch := state.epoch + 1, cfg.train.epochs):
        if state.stops_before(epoch, cfg.train):
            break  # early stopping: val accuracy has not improved for `patience` epochs
        seed_epoch(fabric, loaders, cfg.train.seed, epoch)
        t0 = time.perf_counter()
        train_loss, train_acc, seen, lr, waited = train_one_epoch(fabric, model, raw_model, optimizer, loaders.train,
                                                                  tricks, epoch, cfg, state, ckpt, quiet, log,
                                                                  scheduler if per_step else None, governor)
        seconds = time.perf_counter() - t0
        if epoch == first_epoch and (hint := wait_hint(cfg.data.cache, fabric.device.type, waited, seconds,
                                                       fabric.world_size)):
            fabric.print(hint)
        val = validate(model, loaders.val, scores, epoch, cfg, state, ckpt)
        if not per_step:  # lr above is the rate of the epoch's last step (a per-step schedule moves within it)
            scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val["loss"],
               "val_acc": val["acc"], "lr": lr, "seconds": round(time.perf_counter() - t0, 3)}
        row.update(probe_epoch(fabric, tricks, raw_model, loaders.val, state))
        improved = state.end_epoch(epoch, row, seconds, seen)
        log.log_epoch(epoch + 1, row)  # flushed before the checkpoint that a resume starts from
        fabric.print(f"epoch {epoch + 1:3d}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                     f"val loss {val['loss']:.4f} acc {val['acc']:.4f}  ({row['seconds']:.1f}s)")
        first_process_writes(fabric, commit_epoch, run_dir, state.to_dict(raw_model.state_dict(), optimizer,
                             scheduler, tricks.criterion.state_dict()), improved,
                             [*runs.HISTORY_FIELDS, *tricks.probe_fields])

    if governor is not None:
        governor.close()  # the process keeps the thread count it came with
    # --- test once, on the best checkpoint ---
    raw_model.load_state_dict(runs.load_weights(ckpt / "best.safetensors"))
    test = evaluate(model, loaders.test, progress=not quiet, desc="test", **scores)
    metrics = final_metrics(cfg, state, test, splits, fabric, precision, bn_mode, counts)
    metrics["channels_last"] = channels_last
    metrics["seconds"] = round(time.perf_counter() - t_start + (state.train_seconds if resume else 0), 2)
    first_process_writes(fabric, plot_curves, state.history, run_dir / "curves.png")
    first_process_writes(fabric, runs.write_json_atomic, run_dir / "metrics.json", metrics)
    log.close()
    return run_dir  # metrics.json exists for every process by now


def probe_epoch(fabric: Fabric, tricks: Tricks, raw_model, val_loader, state: TrainState) -> dict:
    """The configured probe's scores on val as ``probe_*`` history fields (none when no probe runs)."""
    probed = tricks.probe(raw_model, val_loader, fabric.autocast, state.probes)
    if probed is None:
        return {}
    if probed[1]:
        fabric.print(probed[1])
    return {f"probe_{k}": v for k, v in probed[0].items()}


def seed_epoch(fabric: Fabric, loaders, seed: int, epoch: int) -> None:
    """Seed the processes, the loaders' shuffling and the sampler for ``epoch``.

    Seeding per epoch makes an epoch's shuffling, augmentation and dropout a function of
    (seed, epoch) alone, so a run resumed at an epoch boundary ends where an uninterrupted one does."""
    seed_all(seed * 1000 + epoch + 1_000_003 * fabric.global_rank)  # each process its own
    loaders.generator.manual_seed(seed * 1000 + epoch)
    loaders.sampler.use_epoch(epoch)


def validate(model, loader, scores: dict, epoch: int, cfg: config_mod.Config, state: TrainState,
             ckpt: Path) -> dict:
    """Validation scores after ``epoch``; a UserError when the loss is not finite (diverged weights must
    never become a checkpoint), naming what is kept.

    ``model`` is the one through the DDP wrapper on purpose: its first forward after training broadcasts
    the BatchNorm statistics of process 0, whose weights become the checkpoint."""
    val = evaluate(model, loader, **scores)
    if not math.isfinite(val["loss"]):
        raise UserError(f"the validation loss became {val['loss']} after epoch {epoch + 1}: the weights "
                        f"diverged; lower train.lr (now {cfg.train.lr}); {kept(state.history, ckpt)}")
    return val


def preflight(cfg: config_mod.Config, run_dir: str | Path | None, resume: bool) -> tuple[config_mod.Config, dict]:
    """(the config with absolute data paths, the keys a resume changes): every check of the config, the
    output folder and a resumed run's changes, before any data is read or model built."""
    check_training(cfg)
    cfg = with_absolute_paths(cfg)  # `fgvc eval RUN` from another folder still finds the data
    changes = resume_changes(cfg, run_dir) if resume else {}
    if run_dir is None:  # out= a file: refused before any data is read or model built
        runs.check_out_dir(cfg.out, "out")
    return cfg, changes


def start_run(fabric: Fabric, cfg: config_mod.Config, run_dir: str | Path | None, resume: bool, changes: dict,
              class_names: list[str], raw_model, optimizer, scheduler, precision: str,
              steps_per_epoch: int | None = None, on_open=None) -> tuple[Path, TrainState, ExperimentLog]:
    """(run directory, training state, experiment log) of a fresh run, or of a resumed one at its last
    finished epoch, with config.yaml and classes.json written by the first process. ``steps_per_epoch``:
    a per-step schedule's steps in an epoch now (a resume places it at its epoch fraction); ``on_open(run_dir)``
    is told the directory as soon as it exists."""
    run_dir = open_run_dir(fabric, cfg, run_dir, resume, class_names)
    if on_open:
        on_open(run_dir)
    state = restore(run_dir, cfg, changes, raw_model, optimizer, scheduler, steps_per_epoch) if resume else TrainState()
    # config.yaml on resume: with its overrides, and a comment naming each change and its first epoch
    first_process_writes(fabric, runs.write_text_atomic, run_dir / "config.yaml", config_text(cfg, state.resumes))
    first_process_writes(fabric, runs.write_json_atomic, run_dir / "classes.json", class_names)
    fabric.print(f"run directory: {run_dir}  ({precision} on {fabric.device}"
                 + (f", {fabric.world_size} processes)" if fabric.world_size > 1 else ")"))
    # train.loggers: process 0 writes <run>/logs/; a resumed run continues from its optimizer's step count
    log = open_loggers(cfg.train.loggers, run_dir, start_step=optimizer_steps(optimizer), main=fabric.is_global_zero)
    log.log_hparams(config_mod.to_dict(cfg))
    return run_dir, state, log


def train_one_epoch(fabric: Fabric, model, raw_model, optimizer, loader, tricks: Tricks, epoch: int,
                    cfg: config_mod.Config, state: TrainState, ckpt: Path, quiet: bool,
                    log: ExperimentLog | None = None, scheduler=None,
                    governor: ThreadGovernor | None = None) -> tuple[float, float, int, float, float]:
    """One pass over the train shard: (mean loss, accuracy, images summed over processes, the lr of its last
    step, this process's seconds spent waiting for the loader's batches after the first, whose wait also
    starts the loader's workers). Train accuracy under mixing is agreement with the label of the larger
    mixing weight (the argmax of the soft target); without mixing it is plain accuracy. ``scheduler``:
    stepped after every optimizer step (a per-step schedule), or None. ``governor``: resizes the CPU thread
    pool between steps, or None."""
    train_mode(model)  # frozen BatchNorm stays in eval mode
    # sums stay on the device (no .item() per step); the finiteness check below is the one sync
    loss_sum = torch.zeros((), dtype=torch.float64, device=fabric.device)
    correct, seen = torch.zeros((), dtype=torch.int64, device=fabric.device), 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, disable=quiet)
    lr = base_lr(optimizer)

    def optimizer_step(loss):  # the batch's step; a method may take steps of its own before it (PMG)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()

    waited, asked = 0.0, time.perf_counter()
    for step, (x, y) in enumerate(all_or_none(fabric, bar)):
        waited += (time.perf_counter() - asked) if step else 0.0
        if governor is not None:
            governor.tick()
        x, target = tricks.targets(tricks.inputs(x, epoch, step), y)  # device augmentation, then mixing
        loss, logits = tricks.loss(model, raw_model, x, target, fabric.autocast, optimizer_step)
        finite = torch.isfinite(loss.detach()).float()
        if fabric.world_size > 1:  # all processes stop together, or the others would wait forever
            finite = fabric.all_reduce(finite, reduce_op="min")
        if not finite:
            own = loss.item()
            what = own if not math.isfinite(own) else "nan or inf on another process"
            raise UserError(f"the training loss became {what} at epoch {epoch + 1} step {step + 1}; "
                            f"lower train.lr (now {cfg.train.lr}); {kept(state.history, ckpt)}")
        optimizer_step(loss)
        lr = base_lr(optimizer)  # the rate this step trained at, before the schedule moves on
        if scheduler is not None:
            scheduler.step()
        if log:  # process 0's batch loss and its rate
            log.log_step(log.last_step + 1, loss.detach(), lr)
        loss_sum += loss.detach().double() * y.shape[0]
        correct += (logits.argmax(1) == target.argmax(1)).sum()
        seen += y.shape[0]
        if not quiet and step % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
        asked = time.perf_counter()
    sums = torch.stack([loss_sum, correct.double(), torch.tensor(seen, dtype=torch.float64, device=fabric.device)])
    loss_sum, correct, seen = sum_over_processes(fabric, sums).tolist()
    return loss_sum / max(seen, 1), correct / max(seen, 1), int(seen), lr, waited


def setup_fabric(cfg: config_mod.Config) -> tuple[Fabric, str]:
    """A launched Fabric on the configured devices, and the precision that runs."""
    check_accelerator(cfg.train.accelerator, cfg.train.devices)
    precision = resolve_precision(cfg.train.precision, cfg.train.accelerator)
    # the run directory line states the precision, after every check that can fail has passed
    fabric = quiet_fabric(accelerator=cfg.train.accelerator, devices=cfg.train.devices, precision=precision)
    fabric.launch()
    if precision == "bf16-mixed" and cfg.train.precision in ("16", "16-mixed"):
        fabric.print(f"train.precision={cfg.train.precision} runs as bf16-mixed on a CPU (CPU autocast has no fp16); "
                     "metrics.json records bf16-mixed")
    return fabric, precision


def setup_model(cfg: config_mod.Config, class_names: list[str], resume: bool, progress: bool):
    """(model, model.batchnorm mode that ran, whether a BatchNorm layer trains on batch statistics)."""
    model = build_model(cfg, len(class_names), class_names)
    d = cfg.data
    # BatchNorm folded into the convolutions (TensorFlow Lite weights) has placeholder statistics:
    # re-estimate them on training images, or keep BatchNorm frozen (fgvc.models.batchnorm); a resumed
    # run's statistics come with its checkpoint
    bn_mode = prepare_batchnorm(model, cfg, lambda: build_dataset(
        d.name, d.root, "train", eval_transform(d.image_size, d.crop_ratio), d.val_fraction, cfg.train.seed, d.classes),
        measure=not resume, progress=progress)
    bn_trains = _batchnorm_trains(model)
    if bn_trains and cfg.train.batch_size == 1:
        raise UserError(f"train.batch_size=1 cannot train {cfg.model.name}: its BatchNorm layers need at least 2 "
                        "images per batch; set train.batch_size=2 or more (or model.batchnorm=frozen)")
    return model, bn_mode, bn_trains


def final_metrics(cfg: config_mod.Config, state: TrainState, test: dict, splits: Splits, fabric: Fabric,
                  precision: str, bn_mode: str, counts: dict) -> dict:
    """metrics.json of a training run (the schema in DESIGN.md; accuracies are fractions in [0, 1]):
    train/val scores of the best epoch, test scores of its checkpoint, speed, and the protocol."""
    best = state.best_row()
    metrics = {
        "task": run_task(cfg),
        "train_acc": best["train_acc"], "val_acc": best["val_acc"], "test_acc": test["acc"],
        "test_top5": test["top5"], "train_loss": best["train_loss"], "val_loss": best["val_loss"],
        "test_loss": test["loss"], "best_epoch": state.best_epoch + 1, "epochs_run": len(state.history),
        "seconds": None, "train_seconds": round(state.train_seconds, 2),
        "train_images_per_second": round(state.train_images / state.train_seconds, 2) if state.train_seconds else 0.0,
        **counts, "pretrained": pretraining_source(cfg), "batchnorm": bn_mode, "precision": precision,
        "device": str(fabric.device), "devices": fabric.world_size, "num_classes": len(splits.class_names),
        "train_images": len(splits.train), "val_images": len(splits.val), "test_images": len(splits.test),
        "skipped_images": splits.skipped, "resumes": state.resumes,
    }
    metrics["protocol"] = training_protocol(cfg, splits.train, splits.val, splits.test, precision=precision,
                                            device=metrics["device"], pretrained=metrics["pretrained"],
                                            method=describe_method(cfg.method))
    return metrics


def sum_over_processes(fabric: Fabric, t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the processes of a multi-device run (a CPU tensor), ``t`` itself with one."""
    return fabric.all_reduce(t.to(fabric.device), reduce_op="sum").cpu() if fabric.world_size > 1 else t.cpu()


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _batchnorm_trains(model: torch.nn.Module) -> bool:
    """Whether a BatchNorm layer normalises with batch statistics in training (not frozen by
    model.batchnorm or model.trainable): such a layer cannot train on a batch of one image."""
    train_mode(model)
    trains = any(isinstance(m, _BatchNorm) and m.training for m in model.modules())
    model.eval()
    return trains


__all__ = ["train", "fit", "metrics_table", "resolve_precision", "is_main_process"]
