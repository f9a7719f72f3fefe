"""cGAN training (seed section 3.5): hinge loss, n_dis discriminator updates per generator
update, Adam(2e-4, betas (0, 0.9)), linear lr decay at the end, EMA generator, resume.

Run directory: ``config.yaml``, ``meta.json`` (class names, architecture), ``losses.csv``,
``losses.png``, ``samples/iter_XXXXXX.png``, ``checkpoints/``, ``metrics.json``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from fgvc.data import build_dataset
from fgvc.data.transforms import eval_transform
from fgvc.devices import resolve_device
from fgvc.errors import Interrupted, UserError
from fgvc.gan.batches import RealBatches, load_into_memory
from fgvc.gan.checkpoint import (
    latest_checkpoint,
    load_state,
    load_weights,
    save_checkpoint,
)
from fgvc.gan.config import GanConfig, dump_gan_config, validate_gan_config
from fgvc.gan.networks import Discriminator, Generator, count_parameters
from fgvc.gan.synthesize import META_FILE, read_meta, save_sample_grid
from fgvc.protocol import run_protocol
from fgvc.runs import check_out_dir, save_figure, write_json_atomic, write_text_atomic
from fgvc.train.loggers import open_loggers, require_installed

GRID_COLUMNS = 8  # fixed noise vectors per class row in the sample grids
FINAL_WINDOW = 100  # iterations averaged for the final losses in metrics.json


def d_hinge_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge_loss(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake_logits.mean()


def lr_factor(iteration: int, iterations: int, decay_start: float) -> float:
    """Multiplier of the base lr for 0-based update ``iteration``: 1, then linear to 0 at the end."""
    start = decay_start * iterations
    if iteration < start:
        return 1.0
    return max(0.0, (iterations - iteration) / max(iterations - start, 1.0))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def train_iteration(G: Generator, D: Discriminator, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                    real_batches: list[tuple[Tensor, Tensor]],
                    noise: Callable[[int], tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """One generator update, then one discriminator update per real batch (n_dis of them).

    ``noise(n)`` returns (z, class ids) on the networks' device. Returns (mean D loss, G loss).
    """
    # generator first, as the reference updater does; D's weights need no gradient here
    D.requires_grad_(False)
    z, y = noise(real_batches[0][0].shape[0])
    g_loss = g_hinge_loss(D(G(z, y), y))
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    D.requires_grad_(True)

    d_losses = []
    for x_real, y_real in real_batches:
        z, y_fake = noise(x_real.shape[0])
        with torch.no_grad():
            x_fake = G(z, y_fake)
        # one pass over real and fake together: D has no batch norm, so this equals two passes
        # and halves the per-call cost (one spectral-norm power iteration per update)
        logits = D(torch.cat([x_real, x_fake]), torch.cat([y_real, y_fake]))
        d_loss = d_hinge_loss(logits[: len(x_real)], logits[len(x_real):])
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d_losses.append(d_loss.detach())
    # one host sync per iteration instead of one per update
    return torch.stack(d_losses).mean().item(), g_loss.item()


def _build_dataset(config: GanConfig) -> Dataset:
    # imported here so the GAN package loads even where the data package is not importable
    d = config.data
    return build_dataset(d.name, d.root, d.split, eval_transform(d.image_size), d.val_fraction, config.seed)


def _new_run_dir(config: GanConfig) -> Path:
    base = check_out_dir(config.out, "out") / f"gan-{config.data.name}-{config.data.image_size}px-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


def _read_losses(path: Path, upto: int) -> list[tuple[int, float, float]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        rows = [(int(r["iteration"]), float(r["d_loss"]), float(r["g_loss"])) for r in csv.DictReader(f)]
    return [r for r in rows if r[0] <= upto]


def _write_losses(run_dir: Path, history: list[tuple[int, float, float]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["iteration", "d_loss", "g_loss"])
    writer.writerows((i, f"{d:.6f}", f"{g:.6f}") for i, d, g in history)
    write_text_atomic(run_dir / "losses.csv", buf.getvalue())
    # Figure without pyplot: no global backend state is touched inside a library
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    its = [h[0] for h in history]
    ax.plot(its, [h[1] for h in history], label="discriminator (hinge)", lw=0.8)
    ax.plot(its, [h[2] for h in history], label="generator (hinge)", lw=0.8)
    ax.set_xlabel("iteration (generator updates)")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, run_dir / "losses.png", tight=False)


def _check_resume(run_dir: Path, meta: dict) -> None:
    old = read_meta(run_dir)
    for key in ("n_classes", "image_size", "ch", "z_dim", "class_names"):
        if old.get(key) != meta[key]:
            raise UserError(
                f"cannot resume {run_dir}: its {key} is {old.get(key)!r} but this config/dataset gives "
                f"{meta[key]!r}; resume with the run's own config.yaml and dataset"
            )


def _training_images(config: GanConfig, dataset: Dataset | None) -> tuple[Tensor, Tensor, list[str]]:
    """(images uint8 or float in memory, labels, class names) of the training set; labels checked."""
    dataset = _build_dataset(config) if dataset is None else dataset
    images, labels = load_into_memory(dataset, config.data.image_size, config.data.num_workers)
    class_names = [str(c) for c in getattr(dataset, "class_names", range(int(labels.max()) + 1))]
    if int(labels.max()) >= len(class_names) or int(labels.min()) < 0:
        raise UserError(f"GAN training labels must lie in 0..{len(class_names) - 1} (one per class name); "
                        "check the dataset")
    return images, labels, class_names


def _metrics(config: GanConfig, done: int, seconds: float, history: list, meta: dict, G, D, device) -> dict:
    """metrics.json of a GAN run (task gan): speed, the losses averaged over the last FINAL_WINDOW iterations."""
    tail = history[-FINAL_WINDOW:]
    return {
        "task": "gan", "iterations": done, "seconds": round(seconds, 3),
        "iterations_per_second": round(done / seconds, 4) if seconds > 0 else None,
        "final_d_loss": sum(h[1] for h in tail) / len(tail) if tail else None,
        "final_g_loss": sum(h[2] for h in tail) / len(tail) if tail else None,
        "final_window": len(tail), "n_classes": meta["n_classes"], "image_size": meta["image_size"],
        "batch_size": config.batch_size, "n_dis": config.n_dis, "train_images": meta["train_images"],
        "generator_parameters": count_parameters(G), "discriminator_parameters": count_parameters(D),
        "device": str(device),
        "protocol": run_protocol("gan", config.data.name, {config.data.split: meta["train_images"]},
                                 pretrained={"source": "scratch"}, device=str(device), seed=config.seed,
                                 generated_size=meta["image_size"]),
    }


def _restore(folder: Path | None, run_dir: Path, nets: dict, opt_g, opt_d, noise_rng) -> tuple[int, int, float, list]:
    """(iteration, real batches seen, seconds, loss history) of the checkpoint ``folder`` loaded into the
    networks, optimizers and noise stream; a fresh start without one."""
    if folder is None:
        return 0, 0, 0.0, []
    for name, module in nets.items():
        load_weights(module, folder / f"{name}.safetensors")
    state = load_state(folder)
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    noise_rng.set_state(state["noise_rng"])
    start = int(state["iteration"])
    return start, int(state["batches_seen"]), float(state["seconds"]), _read_losses(run_dir / "losses.csv", start)


def _open_run_dir(config: GanConfig, meta: dict, resume: str | Path | None) -> Path:
    """The resumed run (its meta.json checked against this data) or a new one with meta.json; config.yaml
    written either way."""
    if resume is not None:
        run_dir = Path(resume)
        _check_resume(run_dir, meta)
    else:
        run_dir = _new_run_dir(config)
        write_json_atomic(run_dir / META_FILE, meta)
    write_text_atomic(run_dir / "config.yaml", dump_gan_config(config))
    return run_dir


def _build(config: GanConfig, n_classes: int, device: torch.device):
    """(G, D, G_ema, opt_g, opt_d): seeded weights (and spectral-norm start vectors), Adam with the config's betas."""
    torch.manual_seed(config.seed)
    G = Generator(n_classes, config.data.image_size, config.ch, config.z_dim).to(device)
    D = Discriminator(n_classes, config.data.image_size, config.ch).to(device)
    G_ema = copy.deepcopy(G).eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr, betas=tuple(config.betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr, betas=tuple(config.betas))
    return G, D, G_ema, opt_g, opt_d


def train_gan(config: GanConfig, dataset: Dataset | None = None, progress: bool = True,
              resume: str | Path | None = None) -> Path:
    """Train the cGAN and return its run directory.

    ``dataset`` yields (image float (3, S, S) in [0, 1], label); without it the config's
    data section is loaded with ``eval_transform(image_size)``. ``resume`` is an earlier run
    directory: training continues from its latest checkpoint up to ``config.iterations``.
    """
    device = _checked_device(config)
    if resume is None:  # out= a file: refused before any data is read
        check_out_dir(config.out, "out")
    images, labels, class_names = _training_images(config, dataset)
    n_classes = len(class_names)
    meta = {"class_names": class_names, "n_classes": n_classes, "image_size": config.data.image_size, "ch": config.ch,
            "z_dim": config.z_dim, "dataset": config.data.name, "train_images": len(images)}

    run_dir = _open_run_dir(config, meta, resume)
    G, D, G_ema, opt_g, opt_d = _build(config, n_classes, device)
    noise_rng = torch.Generator().manual_seed(config.seed + 1)
    folder = latest_checkpoint(run_dir) if resume is not None else None
    if resume is not None and folder is None and progress:
        print(f"{run_dir} has no checkpoint yet: training starts at iteration 0", file=sys.stderr)
    start, batches_seen, seconds, history = _restore(folder, run_dir, {"G": G, "G_ema": G_ema, "D": D},
                                                     opt_g, opt_d, noise_rng)

    def noise(n: int) -> tuple[Tensor, Tensor]:
        # drawn on the CPU so a run's noise stream is the same on every device
        z = torch.randn(n, config.z_dim, generator=noise_rng)
        y = torch.randint(n_classes, (n,), generator=noise_rng)
        return z.to(device), y.to(device)

    real = RealBatches(images, labels, config.batch_size, config.seed, config.flip)
    fixed_z = torch.randn(GRID_COLUMNS, config.z_dim, generator=torch.Generator().manual_seed(config.seed + 2))
    rows = min(config.sample_classes, n_classes)
    grid_classes = [round(i * (n_classes - 1) / max(rows - 1, 1)) for i in range(rows)]

    def write_metrics(done: int) -> None:
        write_json_atomic(run_dir / "metrics.json", _metrics(config, done, seconds, history, meta, G, D, device))

    # TensorBoard's HPARAMS tab shows the two losses beside the settings
    log = open_loggers(config.loggers, run_dir, start_step=start, main=True, key="loggers",
                       hparam_metrics=("step/d_loss", "step/g_loss"))
    log.log_hparams(dataclasses.asdict(config))
    bar = tqdm(total=config.iterations, initial=start, disable=not progress, desc="gan", unit="it")
    with StopRequest() as stop:  # ^C: finish the iteration, save a checkpoint, then stop
        for it in range(start, config.iterations):
            tick = time.perf_counter()
            _set_lr((opt_g, opt_d), config.lr * lr_factor(it, config.iterations, config.decay_start))
            batches = [real.batch(k, device) for k in range(batches_seen, batches_seen + config.n_dis)]
            batches_seen += config.n_dis
            d_loss, g_loss = train_iteration(G, D, opt_g, opt_d, batches, noise)
            # a warm-up on the decay keeps short runs' EMA from averaging in the random init
            update_ema(G_ema, G, min(config.ema_decay, (1 + it) / (10 + it)))
            done = it + 1
            history.append((done, d_loss, g_loss))
            log.log_step(done, {"d_loss": d_loss, "g_loss": g_loss}, opt_g.param_groups[0]["lr"])
            bar.update(1)
            bar.set_postfix(d=f"{d_loss:.3f}", g=f"{g_loss:.3f}")
            last = done == config.iterations
            if last or (config.sample_every and done % config.sample_every == 0):
                save_sample_grid(G_ema, grid_classes, fixed_z, run_dir / "samples" / f"iter_{done:06d}.png",
                                 class_names=class_names, title=f"{run_dir.name}: generated samples at iteration {done} "
                                 "(EMA generator; a row per class, the same noise in each column)")
            if last or done % config.checkpoint_every == 0 or stop.asked:
                seconds, tick = seconds + time.perf_counter() - tick, time.perf_counter()
                _save(run_dir, config, done, {"G": G, "G_ema": G_ema, "D": D}, {
                    "iteration": done, "batches_seen": batches_seen, "seconds": seconds,
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "noise_rng": noise_rng.get_state(),
                }, history)
                write_metrics(done)
                log.flush()  # the logs hold every iteration up to the checkpoint a resume starts from
                if stop.asked and not last:
                    bar.close()
                    raise Interrupted(run_dir)  # after the checkpoint: --resume continues from this iteration
            seconds += time.perf_counter() - tick  # wall time of updates, grids and checkpoints
    bar.close()
    log.close()
    if start >= config.iterations:  # nothing left to train: still leave consistent summary files
        write_metrics(start)
    return run_dir


def _checked_device(config: GanConfig) -> torch.device:
    """The device ``config.device`` names (the one --device resolver), once the config is valid and its
    loggers are installed: all checked before anything is written."""
    validate_gan_config(config)
    if config.loggers:
        require_installed(config.loggers, key="loggers")
    return resolve_device(config.device)


def _set_lr(optimizers, lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def _save(run_dir: Path, config: GanConfig, done: int, nets: dict, state: dict, history: list) -> None:
    """Checkpoint of iteration ``done`` (``state``: counters, optimizers and the noise stream; the config is
    added) and losses.csv up to it."""
    save_checkpoint(run_dir, done, nets, {**state, "config": dataclasses.asdict(config)}, keep=config.keep_checkpoints)
    _write_losses(run_dir, history)


class StopRequest:
    """SIGINT while training: the first ^C asks the loop to finish its iteration, save a checkpoint and
    stop (``asked``), so that no work since the last periodic checkpoint is lost (checkpoint_every is
    500 iterations, about half an hour on a CPU); a second ^C stops at once. Only in the main thread,
    where Python delivers signals; elsewhere it changes nothing."""

    def __init__(self):
        self.asked, self._previous = False, None

    def _ask(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        print("\nfgvc: stopping after this iteration to save a checkpoint (^C again stops at once)",
              file=sys.stderr)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._ask)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
