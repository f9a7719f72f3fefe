"""Spies for tests/train/test_wiring.py: what a training run feeds its model and its optimizer.

They observe a run from outside the loop, so they keep working whatever shape the loop takes:

- every forward of a ``fgvc`` classifier is recorded (its input, the mode, whether autograd and
  autocast were on, the logits), and the gradient that reaches the logits of a train-mode
  forward is captured. For a mean soft cross-entropy loss that gradient is
  ``w * (softmax(logits) - target) / batch``, so the targets the loop trained on (one-hot,
  smoothed or mixed) and the weight ``w`` of each term can be read back from it;
- every optimizer step is recorded with the learning rate and weight decay of its param groups,
  and a run can be cut short right after its first step (``StopRun``).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from fgvc.models.factory import Classifier


class StopRun(Exception):
    """Raised by a spy to end a run once it has seen what the test needs."""


class RunawayRun(AssertionError):
    """A run took far more optimizer steps than its config allows (a setting that bounds it was lost)."""


@dataclass
class Forward:
    training: bool  # the model's mode
    grad: bool  # autograd on (a training forward or an attack's search)
    autocast: bool  # CPU or CUDA autocast on
    autocast_dtype: torch.dtype | None
    x: torch.Tensor  # the input, float32, on the CPU
    logits: torch.Tensor  # float32, on the CPU
    grads: list = field(default_factory=list)  # gradients that reached the logits (train-mode forwards)


@dataclass
class Step:
    lr: list[float]  # per param group
    weight_decay: list[float]


@dataclass
class Spy:
    forwards: list[Forward] = field(default_factory=list)  # those up to the first optimizer step
    steps: list[Step] = field(default_factory=list)  # every optimizer step of the run
    fabric: list[dict] = field(default_factory=list)  # how each Fabric was set up

    @property
    def train_forwards(self) -> list[Forward]:
        """Train-mode forwards of the first step whose logits received a gradient."""
        return [f for f in self.forwards if f.training and f.grads]

    @property
    def search_forwards(self) -> list[Forward]:
        """Eval-mode forwards with autograd on, before the first step: an attack's search."""
        return [f for f in self.forwards if not f.training and f.grad]

    def first_batch(self) -> torch.Tensor:
        return self.train_forwards[0].x

    def targets(self, weight: float = 1.0, forward: int = 0) -> torch.Tensor:
        """The soft targets of a train-mode forward, from ``grad = w (softmax - t) / B``."""
        f = self.train_forwards[forward]
        g = sum(f.grads)
        return F.softmax(f.logits, dim=1) - f.logits.shape[0] * g / weight


def _autocast_state() -> tuple[bool, torch.dtype | None]:
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device):
            return True, torch.get_autocast_dtype(device)
    return False, None


@contextlib.contextmanager
def spy_on_training(stop_after_first_step: bool = False, stop_at_fabric: bool = False, max_steps: int = 500):
    """Record a run's forwards (up to its first optimizer step) and its optimizer steps.

    ``stop_after_first_step`` ends the run (``StopRun``) once its first step is done,
    ``stop_at_fabric`` as soon as its Fabric exists; more than ``max_steps`` steps is a ``RunawayRun``.
    """
    spy = Spy()
    real_forward = Classifier.forward

    def forward(self, x, *args, **kwargs):
        out = real_forward(self, x, *args, **kwargs)
        if not spy.steps:
            on, dtype = _autocast_state()
            record = Forward(self.training, torch.is_grad_enabled(), on, dtype,
                             x.detach().float().cpu().clone(), out.detach().float().cpu().clone())
            spy.forwards.append(record)
            if self.training and out.requires_grad:
                out.register_hook(lambda g, r=record: r.grads.append(g.detach().float().cpu().clone()))
        return out

    def before_step(optimizer, args, kwargs):
        if len(spy.steps) >= max_steps:
            raise RunawayRun(f"more than {max_steps} optimizer steps")
        spy.steps.append(Step([g["lr"] for g in optimizer.param_groups],
                              [g["weight_decay"] for g in optimizer.param_groups]))

    def after_step(optimizer, args, kwargs):
        if stop_after_first_step:
            raise StopRun

    from lightning_fabric import Fabric

    real_init = Fabric.__init__
    parameters = inspect.signature(real_init).parameters

    def fabric_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        bound = dict(zip(list(parameters)[1:], args, strict=False)) | kwargs
        strategy = self.strategy
        spy.fabric.append({"args": bound, "accelerator": type(self.accelerator).__name__,
                           "processes": len(getattr(strategy, "parallel_devices", None) or [None]),
                           "device": str(getattr(strategy, "root_device", "?"))})
        if stop_at_fabric:
            raise StopRun

    Classifier.forward = forward
    Fabric.__init__ = fabric_init
    handles = [register_optimizer_step_pre_hook(before_step),
               register_optimizer_step_post_hook(after_step)]
    try:
        yield spy
    finally:
        Classifier.forward = real_forward
        Fabric.__init__ = real_init
        for h in handles:
            h.remove()


def run_and_spy(cfg, run_dir, **stops):
    """Train ``cfg`` into ``run_dir`` under the spies; returns the spy (a stopped run is not an error)."""
    from fgvc.train import train

    with spy_on_training(**stops) as spy:
        try:
            train(cfg, run_dir=run_dir, progress=False)
        except StopRun:
            pass
    return spy


@contextlib.contextmanager
def scripted_val_accuracy(accuracies: list[float]):
    """Every evaluation of the validation split reports the next of ``accuracies`` as its
    accuracy (its loss stays real); other splits are evaluated for real. Replaces fgvc's
    ``evaluate`` wherever a module of fgvc imported it. Yields the list of splits evaluated."""
    import sys

    from fgvc.train.evaluate import evaluate as real

    calls: list[str] = []
    script = iter(accuracies)

    def evaluate(model, loader, *args, **kwargs):
        result = real(model, loader, *args, **kwargs)
        split = getattr(getattr(loader, "dataset", None), "split", "?")
        calls.append(split)
        if split == "val":
            result = {**result, "acc": next(script)}
        return result

    patched = []
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("fgvc"):
            for name, value in list(vars(module).items()):
                if value is real:
                    setattr(module, name, evaluate)
                    patched.append((module, name))
    try:
        yield calls
    finally:
        for module, name in patched:
            setattr(module, name, real)
