"""`fgvc eval` on a run whose metrics.json is damaged: refused before any scoring, with the fix."""

import shutil

import pytest

from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.evaluation import eval_run


def _copy(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for old in run.glob("eval_*.json"):
        old.unlink()
    return run


def test_a_damaged_metrics_json_is_refused_before_scoring_with_the_fix(tiny_run, tmp_path, monkeypatch, capsys):
    run = _copy(tiny_run, tmp_path)
    (run / "metrics.json").write_text("garbage\n")
    import fgvc.evaluation as evaluation

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before the damaged metrics.json was found")

    monkeypatch.setattr(evaluation.Scorer, "__call__", no_scoring)
    with pytest.raises(UserError, match=r"metrics.json is damaged.*fgvc train --resume .*run"):
        eval_run(run, progress=False)
    assert main(["eval", str(run)]) == 2
    assert "fgvc train --resume" in capsys.readouterr().err
    (run / "checkpoints" / "last_state.pt").unlink()  # nothing to rebuild it from: another fix
    with pytest.raises(UserError, match="no checkpoints/last_state.pt"):
        eval_run(run, progress=False)
    assert not (run / "eval_test.json").exists()
