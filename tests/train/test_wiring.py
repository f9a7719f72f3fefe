"""Every aug.*, adv.* and train.* setting reaches its effect in a real training run.

Each test fails when its key stops reaching the loop (ignored, replaced by its default, or
wired to the wrong place). They read what the run did, not how the loop is written:

- spies (wiring_helpers.py) record what the model is fed in the first step (images, the
  targets read back from the gradient at the logits, autocast) and every optimizer step
  (learning rate, weight decay); most runs stop right after their first step;
- the run directory: history.csv rows and columns, metrics.json.

Runs are tiny (a 0.4M-parameter timm test ResNet on 16 px images, one thread) and shared
between tests through module-scoped fixtures.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from wiring_helpers import StopRun, run_and_spy, scripted_val_accuracy

from fgvc import api, runs
from fgvc.data import build_dataset
from fgvc.data.transforms import eval_transform
from fgvc.train import evaluate, train

# Values the tests check are never the defaults (lr 5e-5, weight decay 1e-3, batch size 16, ...),
# so a key that falls back to its default shows.
BASE = ["model.name=test_resnet", "data.image_size=16", "data.num_workers=0", "data.name=synthbirds",
        "train.batch_size=8", "train.lr=1e-3", "train.weight_decay=0.05", "train.epochs=1",
        "train.patience=0", "train.precision=32-true"]
CLASSES = 4  # tiny_synthbirds_root


# one_thread, make_cfg (this module's BASE) and first_step: tests/train/conftest.py
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def baseline(make_cfg, tmp_path_factory):
    """A full 3-epoch run, no tricks; the learning rate halves after epochs 1 and 2."""
    run_dir = tmp_path_factory.mktemp("baseline")
    spy = run_and_spy(make_cfg("train.epochs=3", "train.milestones=[1,2]", "train.gamma=0.5"), run_dir)
    return spy, run_dir


def _history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _labels(spy) -> torch.Tensor:
    """Class of each first-batch image, from the one-hot targets of a run without mixing."""
    t = spy.targets()
    assert torch.allclose(t.max(1).values, torch.ones(len(t)), atol=1e-4), "targets are not one-hot"
    return t.argmax(1)


def _steps_per_epoch(run_dir, batch_size=8) -> int:
    return math.ceil(_metrics(run_dir)["train_images"] / batch_size)


# --- train.* ----------------------------------------------------------------------------------

def test_train_epochs_is_the_number_of_history_rows(baseline):
    spy, run_dir = baseline
    assert [int(r["epoch"]) for r in _history(run_dir)] == [1, 2, 3]
    assert _metrics(run_dir)["epochs_run"] == 3
    assert len(spy.steps) == 3 * _steps_per_epoch(run_dir)


def test_train_batch_size_is_the_first_batch_size(baseline):
    spy, run_dir = baseline
    assert spy.first_batch().shape[0] == 8 < _metrics(run_dir)["train_images"]
    assert len(spy.steps) == 3 * _steps_per_epoch(run_dir, 8)


def test_train_lr_is_the_optimizer_learning_rate(baseline):
    spy, _ = baseline
    assert spy.steps[0].lr == pytest.approx([1e-3] * len(spy.steps[0].lr))


def test_train_milestones_are_where_the_learning_rate_changes(baseline):
    spy, run_dir = baseline
    k = _steps_per_epoch(run_dir)
    lrs = [s.lr[0] for s in spy.steps]
    changes = [i for i in range(1, len(lrs)) if lrs[i] != lrs[i - 1]]
    assert changes == [k, 2 * k], lrs  # after epoch 1 and after epoch 2
    # history.csv's lr follows the schedule: the rate each epoch trained at (or, in versions before
    # that was fixed, the rate after the epoch's scheduler step)
    logged = [float(r["lr"]) for r in _history(run_dir)]
    assert logged == pytest.approx([1e-3, 5e-4, 2.5e-4]) or logged == pytest.approx([5e-4, 2.5e-4, 2.5e-4]), logged


def test_train_gamma_is_the_learning_rate_factor(baseline):
    spy, run_dir = baseline
    k = _steps_per_epoch(run_dir)
    lrs = [s.lr[0] for s in spy.steps]
    assert lrs == pytest.approx([1e-3] * k + [5e-4] * k + [2.5e-4] * k)


def test_train_weight_decay_is_the_optimizer_weight_decay(baseline):
    spy, _ = baseline
    assert {wd for s in spy.steps for wd in s.weight_decay} == {0.05}


def test_train_seed_chooses_the_first_batch(baseline, first_step):
    spy, _ = baseline
    other, again = first_step("train.seed=1"), first_step("train.seed=1", "train.lr=2e-3")
    assert torch.equal(other.first_batch(), again.first_batch())  # a seed gives one first batch ...
    assert not torch.equal(other.first_batch(), spy.first_batch())  # ... and another seed another one


@pytest.fixture(scope="module")
def bf16_run(make_cfg, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bf16")
    # 32 px, not 16: with torch 2.14 on a bf16 CPU, CPU bf16 autocast gives this model at 16 px a NaN
    # weight gradient in about one run of three (its 1x1 stride-2 convolution; reproduced without fgvc)
    return run_and_spy(make_cfg("train.precision=bf16-mixed", "data.image_size=32"), run_dir), run_dir


def test_train_precision_is_recorded_and_reaches_the_forward(baseline, bf16_run):
    spy, run_dir = baseline
    assert _metrics(run_dir)["precision"] == "32-true"
    assert not spy.train_forwards[0].autocast
    spy, run_dir = bf16_run
    assert _metrics(run_dir)["precision"] == "bf16-mixed"
    assert spy.train_forwards[0].autocast and spy.train_forwards[0].autocast_dtype == torch.bfloat16


def test_train_devices_is_the_number_of_processes(make_cfg, tmp_path):
    # stopped as soon as Fabric exists: two processes would be launched next
    spy = run_and_spy(make_cfg("train.devices=2", "train.accelerator=cpu"), tmp_path, stop_at_fabric=True)
    assert [f["processes"] for f in spy.fabric] == [2]
    spy = run_and_spy(make_cfg("train.accelerator=cpu"), tmp_path, stop_at_fabric=True)
    assert [f["processes"] for f in spy.fabric] == [1]


def test_train_accelerator_chooses_the_device(make_cfg, tmp_path):
    if torch.cuda.is_available():  # cpu on a GPU machine
        spy = run_and_spy(make_cfg("train.accelerator=cpu"), tmp_path, stop_at_fabric=True)
        assert [f["accelerator"] for f in spy.fabric] == ["CPUAccelerator"]
    else:  # cuda on a CPU-only machine must not quietly train on the CPU
        with pytest.raises(Exception) as caught:
            run_and_spy(make_cfg("train.accelerator=cuda"), tmp_path, stop_at_fabric=True)
        assert not isinstance(caught.value, StopRun)
        assert "cuda" in str(caught.value).lower() or "gpu" in str(caught.value).lower()


# --- early stopping and the best checkpoint: val accuracy scripted, 0.9 at epoch 2 ------------

VAL_ACC = [0.5, 0.9, 0.4, 0.3, 0.2, 0.1]


@pytest.fixture(scope="module")
def early_stopped(make_cfg, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("early")
    with scripted_val_accuracy(VAL_ACC) as splits:
        train(make_cfg("train.epochs=6", "train.patience=1", "train.lr=1e-2"), run_dir=run_dir, progress=False)
    return run_dir, splits


def test_train_patience_stops_the_run(early_stopped):
    run_dir, splits = early_stopped
    rows = _history(run_dir)
    assert [float(r["val_acc"]) for r in rows] == VAL_ACC[:len(rows)]  # the script reached the loop
    # best at epoch 2; epoch 3 is one without improvement; patience 1 stops before epoch 4
    assert len(rows) == 3, rows
    assert _metrics(run_dir)["epochs_run"] == 3
    assert splits.count("val") == 3


def _test_scores(run_dir, checkpoint):
    cfg = runs.load_config(run_dir)
    model, _ = api.load(run_dir, checkpoint)
    d = cfg.data
    test = build_dataset(d.name, d.root, "test", eval_transform(d.image_size), d.val_fraction, cfg.train.seed)
    return evaluate(model, torch.utils.data.DataLoader(test, batch_size=64))


def test_test_split_is_scored_on_the_best_checkpoint(early_stopped):
    run_dir, _ = early_stopped
    metrics = _metrics(run_dir)
    assert metrics["best_epoch"] == 2 and metrics["val_acc"] == 0.9
    best, last = _test_scores(run_dir, "best"), _test_scores(run_dir, "last")
    assert abs(best["loss"] - last["loss"]) > 1e-4  # the two checkpoints are told apart
    assert metrics["test_acc"] == best["acc"] and metrics["test_top5"] == best["top5"]
    assert metrics["test_loss"] == pytest.approx(best["loss"], rel=1e-5)
    assert metrics["test_loss"] != pytest.approx(last["loss"], rel=1e-5)


# --- aug.*: what the first step is fed -----------------------------------------------------------

def test_aug_geometric_changes_the_first_batch(baseline, first_step):
    clean, geometric = baseline[0], first_step("aug.geometric=true", "aug.rotation=0")
    assert torch.equal(_labels(geometric), _labels(clean))  # the same images, in the same order ...
    assert not torch.equal(geometric.first_batch(), clean.first_batch())  # ... cropped and flipped


def _black(x: torch.Tensor) -> int:
    return int((x == 0).all(dim=1).sum())


def test_aug_rotation_rotates_the_first_batch(first_step):
    still, turned = first_step("aug.geometric=true", "aug.rotation=0"), first_step("aug.geometric=true", "aug.rotation=90")
    assert torch.equal(_labels(still), _labels(turned))
    assert not torch.equal(still.first_batch(), turned.first_batch())
    assert _black(turned.first_batch()) > _black(still.first_batch()) + 8  # the corners a rotation uncovers


def _holes(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Pixels per image set to zero by Cutout; every other pixel must be untouched."""
    changed = (x != clean).any(dim=1)
    assert bool((x.permute(0, 2, 3, 1)[changed] == 0).all()), "pixels changed other than to zero"
    return (changed | ((x == 0).all(dim=1) & (clean == 0).all(dim=1))).flatten(1).sum(1)


def test_aug_cutout_zeroes_holes_in_the_first_batch(baseline, first_step):
    clean, cut = baseline[0], first_step("aug.cutout=2")
    holes = _holes(cut.first_batch(), clean.first_batch())
    side = round(0.25 * 16)
    assert bool((holes > 0).all()), holes  # every image has its holes ...
    assert int(holes.max()) <= 2 * side * side  # ... two of the default size at most


def test_aug_cutout_size_is_the_hole_side(baseline, first_step):
    clean, cut = baseline[0], first_step("aug.cutout=2", "aug.cutout_size=0.5")
    holes = _holes(cut.first_batch(), clean.first_batch())
    assert int(holes.max()) > 2 * round(0.25 * 16) ** 2, holes  # more than two default holes cover
    assert int(holes.max()) <= 2 * round(0.5 * 16) ** 2


def _one_hot(labels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels, CLASSES).float()


def test_aug_mixup_alpha_mixes_images_and_targets(baseline, first_step):
    clean, mixed = baseline[0], first_step("aug.mixup_alpha=1.0")
    b, x, t, y = clean.first_batch(), mixed.first_batch(), mixed.targets(), _labels(clean)
    soft = 0
    for i in range(len(x)):
        # x_i = lam * b_i + (1 - lam) * b_j for some partner j (timm: the batch reversed)
        fits = []
        for j in range(len(b)):
            d = (b[i] - b[j]).flatten()
            lam = 1.0 if j == i else float(((x[i] - b[j]).flatten() @ d) / (d @ d))
            fits.append((float((x[i] - lam * b[i] - (1 - lam) * b[j]).abs().max()), lam, j))
        err, lam, j = min(fits)
        assert err < 1e-4, (i, fits)
        assert torch.allclose(t[i], lam * _one_hot(y[i]) + (1 - lam) * _one_hot(y[j]), atol=1e-4), (i, t[i], lam)
        soft += 0.02 < lam < 0.98 and y[i] != y[j]
    assert soft > 0, t


def test_aug_cutmix_alpha_pastes_a_box_and_mixes_targets(baseline, first_step):
    clean, mixed = baseline[0], first_step("aug.cutmix_alpha=1.0")
    b, x, t, y = clean.first_batch(), mixed.first_batch(), mixed.targets(), _labels(clean)
    pasted = 0
    for i in range(len(x)):
        own = (x[i] == b[i]).all(dim=0)
        if bool(own.all()):
            continue
        # every other pixel comes from one partner image, in one box
        j = next(j for j in range(len(b)) if j != i and bool(((x[i] == b[j]).all(dim=0) | own).all()))
        box = ~own
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        assert int(box.sum()) == len(rows) * len(cols), "not a rectangle"
        share = float(box.float().mean())
        assert torch.allclose(t[i], (1 - share) * _one_hot(y[i]) + share * _one_hot(y[j]), atol=1e-4), (i, t[i])
        pasted += 1
    assert pasted > 0


def test_aug_label_smoothing_softens_the_targets(baseline, first_step):
    clean, smooth = baseline[0], first_step("aug.label_smoothing=0.2")
    assert torch.equal(smooth.first_batch(), clean.first_batch())
    y = _labels(clean)
    expected = torch.full((len(y), CLASSES), 0.2 / CLASSES)
    expected[torch.arange(len(y)), y] = 1 - 0.2 + 0.2 / CLASSES
    assert torch.allclose(smooth.targets(), expected, atol=1e-4)
    # ... and under mixing too: no class's target goes below s / C
    mixed = first_step("aug.mixup_alpha=1.0", "aug.label_smoothing=0.2").targets()
    assert float(mixed.min()) == pytest.approx(0.2 / CLASSES, abs=1e-4)


# --- adv.* -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pgd_run(make_cfg, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pgd")
    cfg = make_cfg("adv.attack=pgd", "adv.eps=0.1", "adv.alpha=0.01", "adv.steps=3", "adv.loss_weight=0.3")
    return run_and_spy(cfg, run_dir), run_dir


def test_adv_attack_trains_on_adversarial_inputs_and_probes(pgd_run, first_step, baseline):
    spy, run_dir = pgd_run
    clean, adversarial = spy.train_forwards[0].x, spy.train_forwards[1].x
    assert torch.equal(clean, baseline[0].first_batch())
    assert 0 < float((adversarial - clean).abs().max()) <= 0.1 + 1e-6
    row = _history(run_dir)[0]
    for column in ("probe_clean", "probe_fgsm", "probe_pgd"):
        assert 0 <= float(row[column]) <= 1, row
    assert "probe_pgd" not in _history(baseline[1])[0]
    # the attack named is the one run: PGD searches from a random start, FGSM once from x
    assert len(spy.search_forwards) == 3 and not torch.equal(spy.search_forwards[0].x, clean)
    fgsm = first_step("adv.attack=fgsm", "adv.eps=0.1")
    assert len(fgsm.search_forwards) == 1 and torch.equal(fgsm.search_forwards[0].x, fgsm.train_forwards[0].x)
    rs = first_step("adv.attack=rs-fgsm", "adv.eps=0.1")
    assert len(rs.search_forwards) == 1 and not torch.equal(rs.search_forwards[0].x, rs.train_forwards[0].x)


def test_adv_eps_is_the_perturbation_budget(pgd_run, first_step):
    fgsm = first_step("adv.attack=fgsm", "adv.eps=0.1")
    x, x_adv = fgsm.train_forwards[0].x, fgsm.train_forwards[1].x
    step = (x_adv - x).abs()
    inside = (x_adv > 0) & (x_adv < 1)  # not clipped to [0, 1]
    assert torch.allclose(step[inside], torch.full_like(step[inside], 0.1), atol=1e-5)  # FGSM moves each pixel by eps
    spy, _ = pgd_run
    assert float((spy.train_forwards[1].x - spy.train_forwards[0].x).abs().max()) <= 0.1 + 1e-6


def test_adv_alpha_is_the_attack_step(pgd_run):
    spy, _ = pgd_run
    path = [f.x for f in spy.search_forwards] + [spy.train_forwards[1].x]
    steps = torch.cat([(b - a).abs().flatten() for a, b in zip(path, path[1:], strict=False)])
    assert float(steps[steps > 1e-6].median()) == pytest.approx(0.01, abs=1e-5)  # default: 2.5 eps / steps


def test_adv_steps_is_the_number_of_attack_steps(pgd_run):
    spy, _ = pgd_run
    assert len(spy.search_forwards) == 3  # one forward per PGD step (default 7)


def test_adv_loss_weight_weighs_the_clean_loss(pgd_run):
    # grad at clean logits = w (p - t) / B, at adversarial ones (1 - w)(p' - t) / B: solve for w
    spy, _ = pgd_run
    clean, adversarial = spy.train_forwards[:2]
    batch = clean.logits.shape[0]
    gap = (F.softmax(clean.logits, 1) - F.softmax(adversarial.logits, 1)).flatten()
    a = batch * torch.stack([sum(clean.grads).flatten(), sum(adversarial.grads).flatten()], 1)
    coef = torch.linalg.lstsq(a.double(), gap.double()[:, None]).solution.flatten()
    assert 1 / float(coef[0]) == pytest.approx(0.3, abs=1e-3)
    assert -1 / float(coef[1]) == pytest.approx(0.7, abs=1e-3)


def test_train_channels_last_reaches_the_convolution_weights(make_cfg, baseline, tmp_path, monkeypatch):
    from torch import nn

    from fgvc.models.factory import Classifier

    seen = []
    real = Classifier.forward

    def forward(self, x, *args, **kwargs):
        w = next((m.weight for m in self.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)), None)
        if w is not None:
            seen.append(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous())
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(Classifier, "forward", forward)
    for setting, expected in [("true", True), ("false", False), ("auto", True)]:  # auto: a CNN on a CPU
        run_and_spy(make_cfg(f"train.channels_last={setting}", "train.accelerator=cpu"), tmp_path / setting,
                    stop_after_first_step=True)
        assert seen and all(s == expected for s in seen), setting
        seen.clear()
    # a ViT (one patch-embedding convolution) stays as it is under auto
    run_and_spy(make_cfg("model.name=test_vit", "data.image_size=32", "train.accelerator=cpu"), tmp_path / "vit",
                stop_after_first_step=True)
    assert seen and not any(seen)
    # what ran is recorded (the default, auto: a CNN in fp32 is channels-last on a CPU, not on a GPU)
    assert _metrics(baseline[1])["channels_last"] is (_metrics(baseline[1])["device"] == "cpu")


def test_channels_last_auto_follows_the_device_precision_and_model():
    from torch import nn

    from fgvc.devices import resolve_channels_last

    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8))
    vit_like = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Flatten(), nn.Linear(8, 2))
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert resolve_channels_last("auto", cnn, cpu, "32-true") and resolve_channels_last("auto", cnn, cpu, "bf16-mixed")
    assert resolve_channels_last("auto", cnn, cuda, "bf16-mixed") and resolve_channels_last("auto", cnn, cuda, "16-mixed")
    assert not resolve_channels_last("auto", cnn, cuda, "32-true")  # fp32 on a GPU: no tensor cores to feed
    assert not resolve_channels_last("auto", cnn, mps, "32-true")
    assert not resolve_channels_last("auto", vit_like, cpu, "bf16-mixed")
    assert resolve_channels_last("true", vit_like, mps, "32-true") and not resolve_channels_last("false", cnn, cpu, "32-true")
