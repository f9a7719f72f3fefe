"""Loop settings that a mutation audit could break without any test failing: dropout, resume of the
schedule, frozen BatchNorm, data.generated_ratio and the per-epoch seed.

Each test reads what a real run did (the model it built, history.csv, the checkpoint, what the model
was fed), so it fails when its setting stops reaching the loop.
"""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from fgvc import api, config, runs
from fgvc.train import loop, train

FAST = ["model.name=test_resnet", "data.image_size=16", "data.num_workers=0", "data.name=synthbirds",
        "train.batch_size=8", "train.lr=1e-3", "train.patience=0", "train.precision=32-true"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


def _cfg(root, out, *extra):
    return config.load(None, [*FAST, f"data.root={root}", f"out={out}", *extra])


def _history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- 1. model.dropout reaches the model the loop builds ---

def test_dropout_sits_before_a_torchvision_head(tiny_synthbirds_root, tmp_path):
    model = api.build_model(_cfg(tiny_synthbirds_root, tmp_path, "model.name=resnet18", "model.dropout=0.3"), 4)
    fc = model.net.fc
    assert isinstance(fc, nn.Sequential) and isinstance(fc[0], nn.Dropout) and fc[0].p == pytest.approx(0.3)
    assert fc[1] is model.head


def _two_forwards(model, train_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    model.train(train_mode)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
    return a, b


def test_dropout_reaches_a_timm_model(tiny_synthbirds_root, tmp_path):
    torch.manual_seed(0)
    model = api.build_model(_cfg(tiny_synthbirds_root, tmp_path, "model.dropout=0.3"), 4)
    a, b = _two_forwards(model, train_mode=True)
    assert not torch.allclose(a, b), "train-mode forwards agree: model.dropout never reached the timm model"
    a, b = _two_forwards(model, train_mode=False)
    assert torch.equal(a, b)
    # the control: without dropout the same two train-mode forwards agree
    torch.manual_seed(0)
    plain = api.build_model(_cfg(tiny_synthbirds_root, tmp_path, "model.dropout=0"), 4)
    a, b = _two_forwards(plain, train_mode=True)
    assert torch.allclose(a, b)


# --- 3. resume restores the schedule ---

def test_resume_restores_a_schedule_that_moves_after_the_resume_point(tiny_synthbirds_root, tmp_path):
    extra = ["train.epochs=3", "train.milestones=[2]", "train.gamma=0.5"]
    full = train(_cfg(tiny_synthbirds_root, tmp_path / "full", *extra), progress=False)
    # interrupted after its first epoch: the run's state is that of epoch 1 of 3
    part = train(_cfg(tiny_synthbirds_root, tmp_path / "part", "train.epochs=1", *extra[1:]), progress=False)
    (part / "metrics.json").unlink()
    (part / "config.yaml").write_text(config.dump(_cfg(tiny_synthbirds_root, tmp_path / "part", *extra)))
    resumed = train(runs.load_config(part), run_dir=part, resume=True, progress=False)
    lrs = [float(r["lr"]) for r in _history(full)]
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4])  # the schedule moves after the resume point
    assert [float(r["lr"]) for r in _history(resumed)] == pytest.approx(lrs)
    a = runs.load_weights(full / "checkpoints/last.safetensors")
    b = runs.load_weights(resumed / "checkpoints/last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- 4. frozen BatchNorm stays frozen in the real loop ---

def test_a_frozen_backbone_keeps_its_batchnorm_statistics(tiny_synthbirds_root, tmp_path, monkeypatch):
    built = {}
    real_build = loop.build_model

    def capture(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(loop, "build_model", capture)
    run = train(_cfg(tiny_synthbirds_root, tmp_path, "model.trainable=fc", "train.epochs=1"), progress=False)
    saved = runs.load_weights(run / "checkpoints/last.safetensors")
    assert set(saved) <= set(built)
    stats = [k for k in saved if k.endswith(("running_mean", "running_var"))]
    assert len(stats) >= 4
    changed = [k for k in stats if not torch.equal(saved[k], built[k])]
    assert not changed, f"frozen BatchNorm layers updated their statistics: {changed[:3]}"
    # the head did train, so the run was not a no-op
    assert not torch.equal(saved["net.fc.weight"], built["net.fc.weight"])


# --- 5. data.generated_ratio: tests/train/test_generated_mix.py ---


# --- 12. each epoch draws its own random stream ---
# Host augmentation is seeded per image from (seed, epoch, index) (fgvc.data.seeding); the per-epoch
# seed of the loop is what gives dropout (and Mixup/CutMix) fresh draws each epoch.

def test_each_epoch_drops_out_other_features(tiny_synthbirds_root, tmp_path, monkeypatch):
    masks: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_build = loop.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        dropout = model.net.fc[0]

        def record(module, inputs, output):
            if module.training:
                # (kept, live): which features dropout kept, and where the input was nonzero to tell
                masks.append(((output != 0).detach().cpu(), (inputs[0] != 0).detach().cpu()))
        dropout.register_forward_hook(record)
        return model

    monkeypatch.setattr(loop, "build_model", build)
    train(_cfg(tiny_synthbirds_root, tmp_path, "model.name=resnet18", "model.dropout=0.5", "train.epochs=2"),
          progress=False)
    assert len(masks) % 2 == 0
    (kept1, live1), (kept2, live2) = masks[0], masks[len(masks) // 2]  # first steps of epochs 1 and 2
    live = live1 & live2
    assert live.sum() > 100 and not kept1[live].all()
    assert not torch.equal(kept1[live], kept2[live]), "epoch 2 dropped out exactly the features epoch 1 did"
