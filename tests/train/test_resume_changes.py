"""`fgvc train --resume` with changed settings: a per-step schedule keeps its epoch fraction when the
steps per epoch change, and a finished run stays as it is unless more epochs are asked for."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from fgvc import config, runs
from fgvc.cli import main
from fgvc.data import synthetic
from fgvc.train import train, tricks
from fgvc.train.optim import cosine_factor

# the cosine schedule of a 4-epoch run on 20 training images, lr 1e-3, no warm-up
COSINE = ["model.name=test_resnet", "data.image_size=32", "train.lr=1e-3", "train.patience=0", "data.num_workers=0",
          "train.precision=32-true", "train.accelerator=cpu", "data.name=synthbirds", "train.schedule=cosine",
          "train.warmup=0", "train.epochs=4"]


@pytest.fixture(scope="module")
def twenty(tmp_path_factory) -> Path:
    """4 classes x 12 images at 64 px: 20 training images after the validation draw."""
    return synthetic.generate(tmp_path_factory.mktemp("twenty"), classes=4, per_class=12, size=64, seed=0)


def _lrs(run_dir: Path) -> list[float]:
    with open(run_dir / "history.csv") as f:
        return [float(r["lr"]) for r in csv.DictReader(f)]


def _stop_after_two_epochs(monkeypatch, steps_per_epoch: int) -> None:
    """The first step of epoch 3 dies (a Ctrl-C): epochs 1 and 2 are committed."""
    real, calls = tricks.soft_cross_entropy, []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 * steps_per_epoch + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tricks, "soft_cross_entropy", wrapper)


def test_resume_with_another_batch_size_keeps_the_cosine_schedules_epoch_fraction(twenty, tmp_path, monkeypatch):
    cfg = config.load(None, [*COSINE, f"data.root={twenty}", f"out={tmp_path / 'a'}", "train.batch_size=8"])
    _stop_after_two_epochs(monkeypatch, steps_per_epoch=3)  # 20 images in batches of 8: 8, 8, 4
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "a").iterdir()
    assert main(["train", "--resume", str(run_dir), "--quiet", "train.batch_size=4"]) == 0

    whole = train(config.load(None, [*COSINE, f"data.root={twenty}", f"out={tmp_path / 'b'}", "train.batch_size=4"]),
                  progress=False)
    # batch 4: 5 steps an epoch, 20 in all; history's lr is the rate of each epoch's last step
    expected = [1e-3 * cosine_factor(5 * e - 1, 20, 0) for e in (3, 4)]
    assert expected == pytest.approx([2.061e-4, 6.16e-6], rel=1e-3)
    assert _lrs(whole)[2:] == pytest.approx(expected, rel=1e-9)
    assert _lrs(run_dir)[2:] == pytest.approx(expected, rel=1e-9)  # was 5.0e-4, 1.46e-4: restarted at 30%
    assert _lrs(run_dir)[:2] == pytest.approx([1e-3 * cosine_factor(3 * e - 1, 12, 0) for e in (1, 2)], rel=1e-9)


# --- a finished run ---

FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=8", "train.lr=2e-3", "data.num_workers=0",
        "train.precision=32-true", "train.accelerator=cpu", "data.name=synthbirds", "train.epochs=2"]


@pytest.fixture(scope="module")
def finished(tiny_synthbirds_root, tmp_path_factory) -> Path:
    return train(config.load(None, [*FAST, f"data.root={tiny_synthbirds_root}",
                                    f"out={tmp_path_factory.mktemp('finished')}"]), progress=False)


@pytest.fixture
def finished_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / finished.name))


def _files(run_dir: Path) -> dict:
    return {p.relative_to(run_dir): (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("overrides", [[], ["data.num_workers=1"], ["train.epochs=2", "train.patience=3"]])
def test_resume_of_a_finished_run_changes_nothing_and_says_so(finished_copy, capsys, overrides):
    before = _files(finished_copy)
    assert main(["train", "--resume", str(finished_copy), "--quiet", *overrides]) == 0
    err = capsys.readouterr().err
    assert f"{finished_copy} has finished training (2 of train.epochs=2)" in err and "nothing was changed" in err
    assert "train.epochs=3" in err  # how to train on
    assert _files(finished_copy) == before  # metrics.json (its seconds), config.yaml, curves.png, checkpoints


def test_resume_of_a_finished_run_with_more_epochs_trains_on(finished_copy):
    assert main(["train", "--resume", str(finished_copy), "--quiet", "train.epochs=3"]) == 0
    metrics = runs.read_metrics(finished_copy)
    assert metrics["epochs_run"] == 3 and len(runs.load_state(finished_copy / "checkpoints" / "last_state.pt")["history"]) == 3
    assert metrics["resumes"][0]["changed"]["train.epochs"] == [2, 3]


def test_resume_of_a_run_stopped_early_changes_nothing_unless_patience_grows(tiny_synthbirds_root, tmp_path, capsys,
                                                                           monkeypatch):
    # val accuracy never improves after epoch 1: patience 1 stops the run before epoch 3 of 5
    from fgvc.train import loop

    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: {**real(*a, **k), "acc": 0.5}
                        if k.get("desc") != "test" else real(*a, **k))
    run_dir = train(config.load(None, [*FAST, f"data.root={tiny_synthbirds_root}", f"out={tmp_path}",
                                       "train.epochs=5", "train.patience=1"]), progress=False)
    assert runs.read_metrics(run_dir)["epochs_run"] == 2
    before = _files(run_dir)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet", "train.epochs=9"]) == 0
    err = capsys.readouterr().err
    assert "stopped early after epoch 2" in err and "train.patience=2" in err and "nothing was changed" in err
    assert _files(run_dir) == before
    assert main(["train", "--resume", str(run_dir), "--quiet", "train.patience=2"]) == 0
    assert runs.read_metrics(run_dir)["epochs_run"] == 3


def test_resume_with_more_epochs_moves_the_cosine_schedule_from_its_first_step(twenty, tmp_path, monkeypatch):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    cfg = config.load(None, [*COSINE, f"data.root={twenty}", f"out={tmp_path}", "train.batch_size=8"])
    _stop_after_two_epochs(monkeypatch, steps_per_epoch=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.undo()
    (run_dir,) = tmp_path.iterdir()
    seen = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        assert main(["train", "--resume", str(run_dir), "--quiet", "train.epochs=6"]) == 0
    finally:
        handle.remove()
    # 3 steps an epoch, 18 in all now: the resumed steps are 6..17 of the new schedule, the first one too
    assert seen == pytest.approx([1e-3 * cosine_factor(s, 18, 0) for s in range(6, 18)], rel=1e-9)
