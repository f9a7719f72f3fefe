"""Interrupted and failing training runs: nothing finished is lost, a resumed run ends exactly where an
uninterrupted one does, and every failure is one sentence."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch
from reliability_helpers import FAST, history_without_timing, metrics_without_timing, one_line_error

from fgvc import api, config, runs
from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.train import train, tricks

EPOCHS = 3


def _cfg(root, out, *extra):
    return config.load(None, [*FAST, f"data.root={root}", f"out={out}", f"train.epochs={EPOCHS}", *extra])


@pytest.fixture(scope="module")
def reference(tiny_synthbirds_root, tmp_path_factory) -> Path:
    """An uninterrupted run: what every interrupted-then-resumed run must end as."""
    return train(_cfg(tiny_synthbirds_root, tmp_path_factory.mktemp("reference")), progress=False)


def _assert_same_run(a: Path, b: Path) -> None:
    assert metrics_without_timing(a) == metrics_without_timing(b)
    assert history_without_timing(a) == history_without_timing(b)
    for name in ("best.safetensors", "last.safetensors"):
        wa, wb = runs.load_weights(a / "checkpoints" / name), runs.load_weights(b / "checkpoints" / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def _crash_on_call(monkeypatch, target, name, n, exc=KeyboardInterrupt):
    """Make the n-th call of ``target.name`` raise ``exc`` (a Ctrl-C or a dying process) instead of running."""
    real, calls = getattr(target, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise exc()
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


def _only_run(out: Path) -> Path:
    (run_dir,) = list(out.iterdir())
    return run_dir


def test_crash_in_the_middle_of_an_epoch_resumes_to_the_same_result(tiny_synthbirds_root, tmp_path, reference,
                                                                      monkeypatch):
    # 28 train images in batches of 8: 4 steps an epoch; die at the 2nd step of epoch 2
    _crash_on_call(monkeypatch, tricks, "soft_cross_entropy", 4 + 2)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_synthbirds_root, tmp_path), progress=False)
    monkeypatch.undo()
    run_dir = _only_run(tmp_path)
    assert len(history_without_timing(run_dir)) == 2  # header + epoch 1
    _assert_same_run(train(runs.load_config(run_dir), run_dir=run_dir, resume=True, progress=False), reference)


def test_crash_between_two_checkpoint_files_resumes_to_the_same_result(tiny_synthbirds_root, tmp_path, reference,
                                                                       monkeypatch):
    # the run dies while committing epoch 2, after last.safetensors already holds epoch 2's weights
    # (the order before this was fixed): the optimizer state is still epoch 1's, so the weights must be too
    real = runs.save_state

    def save_state(state, path):
        if state["epoch"] == 1:
            runs.save_weights(state["model"], path.parent / "last.safetensors")
            raise KeyboardInterrupt
        real(state, path)

    monkeypatch.setattr(runs, "save_state", save_state)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_synthbirds_root, tmp_path), progress=False)
    monkeypatch.undo()
    run_dir = _only_run(tmp_path)
    _assert_same_run(train(runs.load_config(run_dir), run_dir=run_dir, resume=True, progress=False), reference)


# --- atomic writes: the old file or the new one, never half, never lost ---

@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch, stage):
    path = tmp_path / "best.safetensors"
    runs.save_weights({"w": torch.ones(3)}, path)
    old = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if stage == "write":
        real_fdopen = os.fdopen

        class Full:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])  # half the bytes reach the disk, then it is full
                disk_full()

        monkeypatch.setattr(runs.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(runs.os, stage, disk_full)
    with pytest.raises(UserError) as e:
        runs.save_weights({"w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert str(path) in str(e.value) and "No space left on device" in str(e.value) and "unchanged" in str(e.value)
    assert path.read_bytes() == old and runs.load_weights(path)["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]


def test_an_interrupt_during_a_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last_state.pt"
    runs.save_state({"epoch": 1}, path)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runs.save_state({"epoch": 2}, path)
    monkeypatch.undo()
    assert runs.load_state(path) == {"epoch": 1} and [p.name for p in tmp_path.iterdir()] == ["last_state.pt"]


def test_disk_full_while_checkpointing_keeps_the_best_checkpoint_and_resumes(tiny_synthbirds_root, tmp_path,
                                                                             reference, monkeypatch, capsys):
    real, seen = os.replace, []

    def replace(src, dst):
        if Path(dst).parent.name == "checkpoints":
            seen.append(Path(dst).name)
            if len(seen) > 3:  # epoch 1 wrote best, last_state and last; epoch 2's first write fails
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(src, dst)

    monkeypatch.setattr(runs.os, "replace", replace)
    assert main(["train", *FAST, f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", f"train.epochs={EPOCHS}",
                 "--quiet"]) == 2
    monkeypatch.undo()
    line = one_line_error(capsys.readouterr())
    assert "No space left on device" in line and "is unchanged" in line
    run_dir = _only_run(tmp_path)
    ckpt = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.safetensors", "last.safetensors", "last_state.pt"]
    model, _ = api.load(run_dir)  # the best checkpoint of epoch 1 loads
    assert runs.load_state(ckpt / "last_state.pt")["epoch"] == 0
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    _assert_same_run(run_dir, reference)


# --- diverging and failing runs ---

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_loss_stops_with_a_sentence_and_keeps_the_last_good_checkpoint(tiny_synthbirds_root, tmp_path,
                                                                                  monkeypatch, bad):
    real, calls = tricks.soft_cross_entropy, []

    def loss(*args):
        calls.append(1)
        out = real(*args)
        return out * bad if len(calls) == 4 + 3 else out  # epoch 2, step 3

    monkeypatch.setattr(tricks, "soft_cross_entropy", loss)
    with pytest.raises(UserError) as e:
        train(_cfg(tiny_synthbirds_root, tmp_path), progress=False)
    msg = str(e.value)
    assert f"loss became {bad}" in msg and "epoch 2 step 3" in msg and "lower train.lr" in msg
    assert "checkpoints of epoch 1" in msg
    run_dir = _only_run(tmp_path)
    state = runs.load_state(run_dir / "checkpoints" / "last_state.pt")
    assert state["epoch"] == 0 and len(state["history"]) == 1
    model, _ = api.load(run_dir)
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())


def test_diverged_weights_never_become_a_checkpoint(tiny_synthbirds_root, tmp_path):
    # lr 1e30: one step blows the weights up; the loss of that step was still finite
    with pytest.raises(UserError) as e:
        train(_cfg(tiny_synthbirds_root, tmp_path, "train.lr=1e30", "train.batch_size=64"), progress=False)
    assert "validation loss became nan after epoch 1" in str(e.value) and "no checkpoint was written" in str(e.value)
    assert not (_only_run(tmp_path) / "checkpoints").exists()


def test_cuda_out_of_memory_is_one_sentence_with_a_smaller_batch(tiny_synthbirds_root, tmp_path, monkeypatch, capsys):
    from fgvc.models.factory import Classifier

    def forward(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Classifier, "forward", forward)
    assert main(["train", *FAST, f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", "train.batch_size=16",
                 "--quiet"]) == 2
    line = one_line_error(capsys.readouterr())
    assert "ran out of memory" in line and "train.batch_size (for example 8)" in line and "--resume" in line


# --- resuming what is left ---

def test_resume_removes_temp_files_a_kill_left_and_keeps_other_files(tiny_synthbirds_root, tmp_path, monkeypatch):
    _crash_on_call(monkeypatch, tricks, "soft_cross_entropy", 4 + 1)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_synthbirds_root, tmp_path, "train.epochs=2"), progress=False)
    monkeypatch.undo()
    run_dir = _only_run(tmp_path)
    stale = [run_dir / "checkpoints" / ".last_state.pt.k3j_9x2a", run_dir / ".history.csv.0a1b2c3d",
             run_dir / ".curves.png.tmp.png"]
    for p in stale:
        p.write_bytes(b"half a file")
    (run_dir / ".notes").write_text("mine")
    train(runs.load_config(run_dir), run_dir=run_dir, resume=True, progress=False)
    assert not any(p.exists() for p in stale) and (run_dir / ".notes").read_text() == "mine"


@pytest.fixture(scope="module")
def one_epoch_run(tiny_synthbirds_root, tmp_path_factory) -> Path:
    return train(_cfg(tiny_synthbirds_root, tmp_path_factory.mktemp("one"), "train.epochs=1"), progress=False)


@pytest.fixture
def run_copy(one_epoch_run, tmp_path) -> Path:
    return Path(shutil.copytree(one_epoch_run, tmp_path / one_epoch_run.name))


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "cannot be loaded safely"),
    (lambda p: p.write_bytes(b""), "cannot be loaded safely"),
    (lambda p: runs.save_state({"epoch": 0}, p), "lacks 'best_acc'"),
    (lambda p: runs.save_state([1, 2, 3], p), "lacks 'epoch'"),
])
def test_damaged_training_state_is_one_sentence_on_resume(run_copy, capsys, damage, words):
    damage(run_copy / "checkpoints" / "last_state.pt")
    assert main(["train", "--resume", str(run_copy), "train.epochs=2", "--quiet"]) == 2
    line = one_line_error(capsys.readouterr())
    assert "last_state.pt" in line and words in line


@pytest.mark.parametrize("overrides, words", [
    (["model.name=test_vit"], "cannot change model.name=test_vit"),
    (["model.trainable=fc"], "cannot change model.trainable=fc"),
    (["data.root=ELSEWHERE"], "differ from"),  # data.root may move (the same dataset); other classes may not
])
def test_resuming_with_another_model_or_dataset_is_one_sentence(run_copy, tmp_path, capsys, overrides, words):
    from fgvc.data import synthetic

    if overrides == ["data.root=ELSEWHERE"]:
        other = synthetic.generate(tmp_path / "other", classes=3, per_class=8, size=32, seed=2)
        overrides = [f"data.root={other}"]
    assert main(["train", "--resume", str(run_copy), "train.epochs=2", *overrides, "--quiet"]) == 2
    assert words in one_line_error(capsys.readouterr())


def test_resume_with_a_config_file_is_refused(run_copy, capsys):
    assert main(["train", "--resume", str(run_copy), str(run_copy / "config.yaml")]) == 2
    assert "pass only key=value overrides" in one_line_error(capsys.readouterr())


def test_resume_with_overrides_extends_the_run(run_copy, capsys):
    assert main(["train", "--resume", str(run_copy), "train.epochs=2", "--quiet"]) == 0
    assert metrics_without_timing(run_copy)["epochs_run"] == 2
    assert config.load(run_copy / "config.yaml").train.epochs == 2


def test_a_training_state_without_weights_resumes_from_last_safetensors(run_copy):
    # states written before last_state.pt carried the weights: resume reads last.safetensors for them
    path = run_copy / "checkpoints" / "last_state.pt"
    state = runs.load_state(path)
    del state["model"]
    runs.save_state(state, path)
    train(config.load(run_copy / "config.yaml", ["train.epochs=2"]), run_dir=run_copy, resume=True, progress=False)
    assert metrics_without_timing(run_copy)["epochs_run"] == 2
