"""The command `fgvc report` offers for an unfinished run is one the user can paste: the run's path as seen
from the current directory, and `--resume` only where it does what the report says."""

import os
import shutil

from fgvc import runs
from fgvc.cli import main
from fgvc.report import collect_runs


def _interrupted(tiny_run, runs_dir):
    run = runs_dir / "20261130-095406-synthbirds-resnet18"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").unlink()  # killed after its epoch was committed (last_state.pt)
    return run


def _note(runs_dir, name):
    return next(e["unfinished"] for e in collect_runs(runs_dir) if e["name"] == name)


def test_resume_hint_is_relative_to_the_current_directory_when_below_it(tiny_run, tmp_path, monkeypatch):
    run = _interrupted(tiny_run, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    assert _note(tmp_path / "runs", run.name).endswith(f"continue with fgvc train --resume runs/{run.name}")
    monkeypatch.chdir(run)
    assert _note(tmp_path / "runs", run.name).endswith("continue with fgvc train --resume .")


def test_resume_hint_is_absolute_when_the_run_is_elsewhere(tiny_run, tmp_path, monkeypatch):
    run = _interrupted(tiny_run, tmp_path / "runs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    note = _note(tmp_path / "runs", run.name)
    assert note.endswith(f"continue with fgvc train --resume {run.resolve()}") and os.path.isabs(note.split()[-1])


def test_a_run_that_failed_before_its_first_epoch_is_offered_the_command_that_works(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "failed"
    run.mkdir(parents=True)
    for name in ("config.yaml", "classes.json"):
        shutil.copy(tiny_run / name, run / name)
    monkeypatch.chdir(tmp_path)
    note = _note(tmp_path / "runs", "failed")
    assert "continue with" not in note
    assert "no checkpoint to continue from: start it over with fgvc train --resume runs/failed" in note
    # what the report says: --resume on such a folder trains it from epoch 1 with its config.yaml
    assert main(["train", "--resume", note.split("--resume ")[1].split()[0], "--quiet"]) == 0
    assert runs.read_metrics(run)["epochs_run"] == 1
