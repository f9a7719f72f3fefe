"""Batch composition, settings given on resume, several processes,
and records that must say what ran."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_helpers import FAST, one_line_error
from torch.utils.data import DistributedSampler, SequentialSampler

from fgvc import config, devices, runs
from fgvc.cli import main
from fgvc.data import build_dataset, synthetic
from fgvc.train import splits


@pytest.fixture(scope="module")
def nine(tmp_path_factory) -> Path:
    """3 classes x 8 images at 32 px: 9 training images, an odd count."""
    root = tmp_path_factory.mktemp("nine")
    synthetic.generate(root, classes=3, per_class=8, size=32, seed=1)
    assert len(build_dataset("synthbirds", root, "train", None, 0.1, 0)) == 9
    return root


def _train(root, out, *extra) -> int:
    return main(["train", "--quiet", *FAST, f"data.root={root}", f"out={out}", "train.epochs=1", *extra])


def _only_run(out: Path) -> Path:
    (run_dir,) = list(out.iterdir())
    return run_dir


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _images_trained(runs_dir: Path) -> int:
    # exact, from the committed training state (img/s x seconds, both rounded, is not: 141.9 x 0.06 = 8.5)
    state = runs.load_state(_only_run(runs_dir) / "checkpoints" / "last_state.pt")
    return state["train_images"]


# --- 1, 2: batch composition ---

def test_a_last_batch_of_one_image_trains_with_batchnorm(nine, tmp_path):
    # 9 images in batches of 8: the last batch of one image has no batch statistics (test_resnet's
    # last BatchNorm sees 1x1 maps); it is dropped instead of crashing the run
    assert _train(nine, tmp_path / "runs", "train.batch_size=8") == 0
    metrics = runs.read_metrics(_only_run(tmp_path / "runs"))
    assert metrics["epochs_run"] == 1 and metrics["train_images"] == 9
    assert _images_trained(tmp_path / "runs") == 8  # one batch of 8 trained


def test_batch_size_one_with_batchnorm_is_one_sentence_and_writes_nothing(nine, tmp_path, capsys):
    assert _train(nine, tmp_path / "runs", "train.batch_size=1") == 2
    line = one_line_error(capsys.readouterr())
    assert "train.batch_size=1" in line and "BatchNorm" in line and "train.batch_size=2" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("key", ["aug.mixup_alpha", "aug.cutmix_alpha"])
def test_an_odd_batch_size_with_mixup_or_cutmix_is_refused_before_anything_is_written(nine, tmp_path, capsys, key):
    assert _train(nine, tmp_path / "runs", "train.batch_size=7", f"{key}=0.2") == 2
    line = one_line_error(capsys.readouterr())
    assert f"{key}=0.2" in line and "train.batch_size=7" in line and "train.batch_size=8" in line
    assert not (tmp_path / "runs").exists()


def test_mixup_trains_on_an_odd_split_smaller_than_a_batch(nine, tmp_path):
    # one batch of 9 images: timm's Mixup would assert; the batch is trimmed to 8
    assert _train(nine, tmp_path / "runs", "train.batch_size=10", "aug.mixup_alpha=0.2", "aug.cutmix_alpha=0.2") == 0
    assert _images_trained(tmp_path / "runs") == 8


@pytest.mark.parametrize("n, batch, even, least, sizes", [
    (9, 8, False, 2, [8]),          # BatchNorm: a last batch of one is dropped
    (10, 8, False, 2, [8, 2]),      # a last batch of two is kept
    (9, 8, False, 1, [8, 1]),       # no BatchNorm training: every image trains
    (9, 4, True, 2, [4, 4]),        # Mixup: an odd remainder of one is dropped
    (11, 8, True, 2, [8, 2]),       # Mixup: a remainder of 3 is trimmed to 2
    (7, 10, True, 2, [6]),          # Mixup: one odd batch smaller than batch_size is trimmed
    (1, 4, False, 2, []),
])
def test_train_batches_keep_only_batches_every_step_can_train_on(n, batch, even, least, sizes):
    batches = splits.TrainBatches(SequentialSampler(range(n)), batch, even=even, least=least)
    assert [len(b) for b in batches] == sizes and len(batches) == len(sizes)


def test_every_shard_drops_its_own_last_batch_of_one_and_takes_the_same_steps():
    # 9 images on 2 processes: shards of 5 (DistributedSampler pads one), batches of 4 leave 1 each
    shards = [splits.TrainBatches(DistributedSampler(range(9), 2, rank, shuffle=True, seed=0), 4, least=2)
              for rank in (0, 1)]
    assert [[len(b) for b in s] for s in shards] == [[4], [4]]
    assert len(shards[0]) == len(shards[1]) == 1


# --- 3: settings given on resume ---

@pytest.fixture(scope="module")
def one_epoch(tiny_synthbirds_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_epoch")
    assert _train(tiny_synthbirds_root, out) == 0  # train.lr=2e-3 (FAST), weight decay 1e-3
    return _only_run(out)


@pytest.fixture
def run_copy(one_epoch, tmp_path) -> Path:
    return Path(shutil.copytree(one_epoch, tmp_path / one_epoch.name))


def test_optimizer_settings_given_on_resume_take_effect_and_are_recorded(run_copy):
    assert main(["train", "--resume", str(run_copy), "--quiet", "train.epochs=2", "train.lr=1e-3",
                 "train.weight_decay=0.5", "train.milestones=[1]", "train.gamma=0.5", "train.batch_size=6"]) == 0
    history = _history(run_copy)
    assert float(history[0]["lr"]) == pytest.approx(2e-3)
    assert float(history[1]["lr"]) == pytest.approx(5e-4)  # the new base rate after the new milestone
    state = runs.load_state(run_copy / "checkpoints" / "last_state.pt")
    groups = state["optimizer"]["param_groups"]
    assert all(g["weight_decay"] == 0.5 and g["lr"] == pytest.approx(5e-4) for g in groups)
    assert state["scheduler"]["base_lrs"] == [1e-3] * len(groups) and state["scheduler"]["gamma"] == 0.5
    # config.yaml holds the new values and says from which epoch they ran; metrics.json records the change
    text = (run_copy / "config.yaml").read_text()
    assert text.startswith("# from epoch 2 on (fgvc train --resume): ") and "train.lr=0.001 (earlier epochs: 0.002)" in text
    cfg = config.load(run_copy / "config.yaml")
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.milestones, cfg.train.batch_size) == (1e-3, 0.5, [1], 6)
    (resume,) = runs.read_metrics(run_copy)["resumes"]
    assert resume["epoch"] == 2 and resume["changed"]["train.lr"] == [2e-3, 1e-3]
    assert resume["changed"]["train.batch_size"] == [8, 6]


@pytest.mark.parametrize("override", ["model.dropout=0.5", "model.name=test_vit", "train.seed=3",
                                      "data.image_size=40", "data.val_fraction=0.2", "aug.mixup_alpha=0.2",
                                      "adv.attack=fgsm", "out=elsewhere"])
def test_a_setting_that_cannot_take_effect_on_resume_is_refused_and_nothing_changes(run_copy, capsys, override):
    before = {p.relative_to(run_copy): p.read_bytes() for p in run_copy.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(run_copy), "--quiet", "train.epochs=2", override]) == 2
    line = one_line_error(capsys.readouterr())
    key = override.split("=")[0]
    assert f"--resume cannot change {override}" in line and f"the run has {key}=" in line
    assert {p.relative_to(run_copy): p.read_bytes() for p in run_copy.rglob("*") if p.is_file()} == before


def test_a_training_setting_given_to_a_finished_run_is_refused(run_copy, capsys):
    config_before = (run_copy / "config.yaml").read_bytes()
    assert main(["train", "--resume", str(run_copy), "--quiet", "train.lr=1e-4"]) == 2
    line = one_line_error(capsys.readouterr())
    assert "has finished training (1 epochs)" in line and "train.lr=0.0001" in line and "train.epochs=2" in line
    assert (run_copy / "config.yaml").read_bytes() == config_before


# --- 11: several processes ---

@pytest.mark.slow  # two or more fresh processes (~15-25 s on 2 cores); `make test-all` runs it
def test_an_unreadable_image_in_one_shard_stops_every_process_with_the_sentence(tiny_synthbirds_root, tmp_path):
    root = Path(shutil.copytree(tiny_synthbirds_root, tmp_path / "birds"))
    bad = build_dataset("synthbirds", root, "train", None, 0.1, 0).samples[0].path
    bad.write_bytes(bad.read_bytes()[:200])  # lands in one process's shard only
    cmd = [sys.executable, "-m", "fgvc", "train", "--quiet", *FAST, "train.devices=2", f"data.root={root}",
           f"out={tmp_path / 'runs'}", "train.epochs=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=240)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Connection closed" not in done.stderr, done.stderr[-3000:]
    sentences = [ln for ln in done.stderr.splitlines() if ln.startswith("fgvc: ")]
    assert len(sentences) == 2 and sentences[0] == sentences[1], done.stderr[-3000:]  # one per process
    assert bad.name in sentences[0] and "cannot be decoded" in sentences[0]


# --- 12, 14: records that say what ran ---

def test_16_bit_precision_on_a_cpu_records_the_bf16_that_ran(nine, tmp_path, capsys):
    assert devices.resolve_precision("16", "cpu") == devices.resolve_precision("16-mixed", "cpu") == "bf16-mixed"
    assert _train(nine, tmp_path / "runs", "train.precision=16") == 0
    assert "runs as bf16-mixed" in capsys.readouterr().out
    metrics = runs.read_metrics(_only_run(tmp_path / "runs"))
    assert metrics["precision"] == "bf16-mixed" and metrics["device"] == "cpu"


def test_16_bit_precision_on_auto_without_a_gpu_is_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.resolve_precision("16-mixed", "auto") == "bf16-mixed"
    assert devices.resolve_precision("32", "auto") == "32-true"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("accelerator", ["cuda", "gpu", "mps"])
def test_a_missing_accelerator_is_one_sentence(nine, tmp_path, capsys, monkeypatch, accelerator):
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert _train(nine, tmp_path / "runs", f"train.accelerator={accelerator}") == 2
    line = one_line_error(capsys.readouterr())
    assert f"train.accelerator={accelerator}" in line and "train.accelerator=cpu" in line
    assert not (tmp_path / "runs").exists()


def test_history_lr_is_the_rate_each_epoch_trained_at(nine, tmp_path):
    assert _train(nine, tmp_path / "runs", "train.epochs=3", "train.milestones=[2]", "train.gamma=0.1") == 0
    lrs = [float(r["lr"]) for r in _history(_only_run(tmp_path / "runs"))]
    assert lrs == pytest.approx([2e-3, 2e-3, 2e-4])
