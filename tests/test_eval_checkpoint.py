"""`fgvc eval` records which checkpoint it scored; `fgvc report` leaves out an evaluation of a checkpoint that
is no longer the run's best; a damaged metrics.json is refused before any scoring, with the fix."""

import json
import shutil

from fgvc import runs, scored_checkpoint
from fgvc.evaluation import eval_run
from fgvc.report.report import build_markdown


def _copy(tiny_run, tmp_path, name="run"):
    run = tmp_path / "runs" / name
    shutil.copytree(tiny_run, run)
    for old in run.glob("eval_*.json"):  # the shared run may hold other tests' evaluations
        old.unlink()
    return run


def _new_best(run, epoch: int = 3):
    """What training does when a later epoch becomes the best: other weights in best.safetensors,
    metrics.json naming that epoch."""
    path = run / "checkpoints" / "best.safetensors"
    weights = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in runs.load_weights(path).items()}
    runs.save_weights(weights, path)
    metrics = runs.read_metrics(run)
    runs.write_json_atomic(run / "metrics.json", {**metrics, "best_epoch": epoch})


def test_eval_of_an_unfinished_run_says_so_and_the_report_drops_it_once_the_best_changes(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    metrics = runs.read_metrics(run)
    (run / "metrics.json").unlink()  # still training: no metrics.json yet
    result = eval_run(run, progress=False)
    err = capsys.readouterr().err
    assert "has not finished training" in err and "epoch 1 of 1" in err
    recorded = json.loads((run / "eval_test.json").read_text())["checkpoint"]
    assert recorded == result["checkpoint"]
    assert recorded["sha256"] == scored_checkpoint.sha256(run / "checkpoints" / "best.safetensors")
    assert recorded["epoch"] == 1 and recorded["run_finished"] is False

    runs.write_json_atomic(run / "metrics.json", metrics)  # training finished, same best checkpoint: shown
    md = build_markdown(tmp_path / "runs", tmp_path)
    assert "## Evaluations (fgvc eval)" in md and "| run | test |" in md and "stale" not in md

    _new_best(run, epoch=3)  # training went on and found a better epoch: the evaluation is stale
    md = build_markdown(tmp_path / "runs", tmp_path)
    assert "| run | test |" not in md
    assert "eval_test.json (it scored the epoch 1 checkpoint, not the current best checkpoint (epoch 3)" in md
    assert "confusion_test.png" not in md and "reliability.png" not in md


def test_eval_of_a_finished_run_records_its_best_epoch_and_prints_no_note(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    result = eval_run(run, progress=False)
    assert "not finished" not in capsys.readouterr().err
    assert result["checkpoint"]["epoch"] == runs.read_metrics(run)["best_epoch"]
    assert result["checkpoint"]["run_finished"] is True


def test_an_eval_file_from_before_checkpoint_records_is_shown_whatever_the_file_times(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    (run / "eval_test.json").write_text(json.dumps({"acc": 0.5}))
    best = run / "checkpoints" / "best.safetensors"
    assert scored_checkpoint.stale_reason({"acc": 0.5}, run / "eval_test.json", run, {}) is None
    import os

    later = (run / "eval_test.json").stat().st_mtime_ns + 10**9
    os.utime(best, ns=(later, later))  # as a plain `cp -r` of the run leaves it: not a sign of a new best
    assert scored_checkpoint.stale_reason({"acc": 0.5}, run / "eval_test.json", run, {}) is None


def test_a_best_checkpoint_replaced_while_it_is_read_is_read_again(tiny_run, tmp_path, monkeypatch):
    """Training writes a new best.safetensors between the hash and the model load: the record must describe
    the weights that were scored, so both are read again."""
    import fgvc.evaluation as evaluation

    run = _copy(tiny_run, tmp_path)
    real_scorer, calls = evaluation.Scorer, []

    def scorer_while_training(*args, **kwargs):
        if not calls:
            _new_best(run, epoch=1)  # the file the hash read is replaced before the weights are loaded
        calls.append(1)
        return real_scorer(*args, **kwargs)

    monkeypatch.setattr(evaluation, "Scorer", scorer_while_training)
    result = eval_run(run, progress=False)
    assert len(calls) == 2
    assert result["checkpoint"]["sha256"] == scored_checkpoint.sha256(run / "checkpoints" / "best.safetensors")


def test_every_analysis_of_an_unfinished_run_says_which_checkpoint_it_uses(tiny_run, tmp_path, capsys):
    from fgvc.cli import main

    run = _copy(tiny_run, tmp_path)
    image = _any_image(run)
    (run / "metrics.json").unlink()  # still training
    for argv in (["predict", str(run), str(image)], ["explain", str(run), str(image), "--method", "gradcam"],
                 ["attack", str(run), "--eps", "0", "--limit", "2"]):
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert f"note: {run} has not finished training" in err and "epoch 1 of 1" in err, (argv, err)
    runs.write_json_atomic(run / "metrics.json", {**json.loads((tiny_run / "metrics.json").read_text())})
    assert main(["predict", str(run), str(image)]) == 0
    assert "not finished" not in capsys.readouterr().err


def _any_image(run):
    from pathlib import Path

    return sorted(Path(runs.load_config(run).data.root).rglob("*.jpg"))[0]
