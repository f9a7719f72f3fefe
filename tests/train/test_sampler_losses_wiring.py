"""data.sampler=pk, loss.pairwise_confusion and loss.center reach what a real training run computes,
and a resumed run with them ends where an uninterrupted one does.

The runs are the wiring tests' tiny ones (timm test ResNet, 16 px, 4 classes of about 7 train images);
spies (wiring_helpers.py) read the first step's batch and the gradient at its logits.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from wiring_helpers import StopRun, run_and_spy

from fgvc import runs
from fgvc.models.factory import Classifier
from fgvc.train import train
from fgvc.train.losses import pairwise_confusion
from fgvc.train.mixing import soft_cross_entropy

BASE = ["model.name=test_resnet", "data.image_size=16", "data.num_workers=0", "data.name=synthbirds",
        "train.batch_size=8", "train.lr=1e-3", "train.epochs=1", "train.patience=0", "train.precision=32-true"]
PK = ["data.sampler=pk", "data.pk_images=4"]  # 2 classes x 4 images


# one_thread, make_cfg (this module's BASE) and first_step: tests/train/conftest.py
pytestmark = pytest.mark.usefixtures("one_thread")


def _labels(spy) -> torch.Tensor:
    return spy.targets().argmax(1)


def test_pk_batches_are_what_the_model_trains_on(first_step):
    counts = Counter(_labels(first_step(*PK)).tolist())
    assert len(counts) == 2 and set(counts.values()) == {4}
    counts = Counter(_labels(first_step(*PK, "data.pk_images=2")).tolist())
    assert len(counts) == 4 and set(counts.values()) == {2}
    # the shuffled loader's first batch of this seed is not one (the key, not chance, made the batches above)
    assert set(Counter(_labels(first_step()).tolist()).values()) != {4}


@pytest.mark.parametrize("keys, says", [
    (["data.pk_images=3"], "2 x 3 is not train.batch_size=8; set train.batch_size to a multiple of 3"),
    # data.pk_classes=P: P x K must be the batch (without it, 8 // 2 = 4 classes would have trained)
    (["data.pk_classes=3", "data.pk_images=2"], "3 x 2 is not train.batch_size=8; set train.batch_size=6"),
    # K alone larger than the batch: no "0 x 100", but what to set
    (["data.pk_images=100"], "data.pk_images=100 is more than train.batch_size=8; set train.batch_size to a multiple of 100 "
     r"\(for example 200\) or data.pk_images to at most 4"),
])
def test_a_batch_size_that_is_not_p_times_k_is_one_sentence(make_cfg, tmp_path, keys, says):
    from fgvc.errors import UserError

    with pytest.raises(UserError, match=says):
        train(make_cfg(*PK, *keys, f"out={tmp_path}"), progress=False)
    assert not any(tmp_path.iterdir())  # refused before a run directory was written


def test_pairwise_confusion_weight_reaches_the_gradient_at_the_logits(first_step):
    plain, pc = first_step(), first_step("loss.pairwise_confusion=0.7")
    assert torch.equal(plain.first_batch(), pc.first_batch())
    f = pc.train_forwards[0]
    y = _labels(plain)
    logits = f.logits.clone().requires_grad_(True)
    loss = soft_cross_entropy(logits, F.one_hot(y, 4).float()) + 0.7 * pairwise_confusion(F.softmax(logits, 1), y)
    loss.backward()
    assert torch.allclose(sum(f.grads), logits.grad, atol=1e-6)
    assert not torch.allclose(sum(plain.train_forwards[0].grads), logits.grad, atol=1e-4)


def _spy_on_head(monkeypatch, forwards: int = 1) -> list[dict]:
    """For each of the first ``forwards`` training forwards: the head's input (``features``), the head's weight
    then (``weight``), the logits it gave, and the gradients that reach its input (``grad``) and its output
    (``grad_logits``). The run stops (StopRun) at the training forward after them."""
    seen: list[dict] = []
    real = Classifier.forward

    def before(module, inputs):
        f = inputs[0]
        if module.training and f.requires_grad:
            if len(seen) == forwards:
                raise StopRun
            record = {"features": f.detach().clone(), "weight": module.weight.detach().clone()}
            f.register_hook(lambda g: record.setdefault("grad", g.detach().clone()))
            seen.append(record)

    def after(module, inputs, out):
        if module.training and out.requires_grad:
            record = seen[-1]
            record["logits"] = out.detach().clone()
            out.register_hook(lambda g: record.setdefault("grad_logits", g.detach().clone()))

    def forward(self, x, *args, **kwargs):
        if not getattr(self.head, "spied", False):
            self.head.register_forward_pre_hook(before)
            self.head.register_forward_hook(after)
            self.head.spied = True
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(Classifier, "forward", forward)
    return seen


def test_center_loss_weight_reaches_the_gradient_at_the_features(make_cfg, tmp_path, monkeypatch):
    seen = _spy_on_head(monkeypatch)
    spy = run_and_spy(make_cfg("loss.center=0.3"), tmp_path, stop_after_first_step=True)
    g_logits = sum(spy.train_forwards[0].grads)
    first = seen[0]
    f = first["features"]
    # centres start at zero: d(0.3 * 1/2 mean ||f||^2)/df = 0.3 f / B, beside what the logits send back
    expected = g_logits @ first["weight"] + 0.3 * f / len(f)
    assert torch.allclose(first["grad"], expected, atol=1e-6)
    assert not torch.allclose(first["grad"], g_logits @ first["weight"], atol=1e-4)


def _classes(record: dict) -> torch.Tensor:
    """The class of each image of a forward, from the mean cross-entropy's gradient (softmax - onehot) / B."""
    logits = record["logits"]
    return (F.softmax(logits, 1) - len(logits) * record["grad_logits"]).argmax(1)


def test_center_alpha_is_the_rate_the_centres_move_at(make_cfg, tmp_path, monkeypatch):
    # Wen et al.'s rule from centres at zero: after step 1, c_j = alpha * sum_{i: y_i = j} f_i / (1 + n_j); step 2's
    # gradient at the features is then what the logits send back plus 0.3 (f - c_y) / B
    seen = _spy_on_head(monkeypatch, forwards=2)
    run_and_spy(make_cfg("loss.center=0.3", "loss.center_alpha=0.8"), tmp_path)
    first, second = seen
    y1, y2 = _classes(first), _classes(second)
    f1, f2 = first["features"], second["features"]

    def centres(alpha):
        c = torch.zeros(4, f1.shape[1])
        for j in range(4):
            c[j] = alpha * f1[y1 == j].sum(0) / (1 + (y1 == j).sum())
        return c

    back = second["grad_logits"] @ second["weight"]
    assert torch.allclose(second["grad"], back + 0.3 * (f2 - centres(0.8)[y2]) / len(f2), atol=1e-6)
    assert not torch.allclose(second["grad"], back + 0.3 * (f2 - centres(0.5)[y2]) / len(f2), atol=1e-4)


def test_a_resumed_pk_center_loss_run_ends_where_an_uninterrupted_one_does(make_cfg, tmp_path):
    keys = [*PK, "loss.center=0.5", "loss.pairwise_confusion=0.2", "aug.geometric=true"]
    whole = train(make_cfg(*keys, "train.epochs=3", f"out={tmp_path / 'whole'}"), progress=False)
    cut = train(make_cfg(*keys, "train.epochs=2", f"out={tmp_path / 'cut'}"), progress=False)
    centres = runs.load_state(cut / "checkpoints" / "last_state.pt")["losses"]["centers"]
    assert centres.shape[0] == 4 and centres.abs().sum() > 0  # the centres moved and were saved
    resumed = train(make_cfg(*keys, "train.epochs=3", f"out={tmp_path / 'cut'}"), run_dir=cut, resume=True,
                    progress=False)
    a, b = runs.load_weights(whole / "checkpoints" / "last.safetensors"), \
        runs.load_weights(resumed / "checkpoints" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    final = runs.load_state(whole / "checkpoints" / "last_state.pt")["losses"]["centers"]
    assert torch.equal(final, runs.load_state(resumed / "checkpoints" / "last_state.pt")["losses"]["centers"])
    protocol = json.loads((whole / "metrics.json").read_text())["protocol"]  # what the numbers were trained with
    assert protocol["sampler"] == {"name": "pk", "classes": 2, "images": 4}
    assert protocol["losses"] == {"center": 0.5, "center_alpha": 0.5, "pairwise_confusion": 0.2}


@pytest.mark.slow  # two fresh processes (~20 s on 2 cores each); `make test-all` runs it
@pytest.mark.parametrize("extra", [["method.name=api_net", "method.api_hidden=8"], ["loss.center=0.5"]])
def test_two_processes_train_on_pk_batches(extra, tiny_synthbirds_root, tmp_path):
    # API-Net pairs within each process's batch; the center loss's centres are summed over processes
    # (API-Net refuses loss.center: its step scores eight gated rows per image)
    import os
    import subprocess
    import sys

    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "fgvc", "train", "--quiet", *BASE, "train.batch_size=4", "data.sampler=pk",
           "data.pk_images=2", *extra, "train.epochs=2", "train.accelerator=cpu", "train.devices=2",
           f"data.root={tiny_synthbirds_root}", f"out={out}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = list(out.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # each process takes len(train) // (P K world) full batches an epoch: together the images of a plain epoch
    seen = metrics["train_images_per_second"] * metrics["train_seconds"]
    steps = metrics["train_images"] // (2 * 2 * 2)
    rounding = 0.005 * metrics["train_seconds"] + 0.005 * metrics["train_images_per_second"] + 0.5  # 2 decimals each
    assert seen == pytest.approx(2 * 2 * steps * 4, abs=rounding)
    if "loss.center=0.5" in extra:
        assert runs.load_state(run_dir / "checkpoints" / "last_state.pt")["losses"]["centers"].abs().sum() > 0
