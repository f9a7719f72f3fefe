"""A run whose dataset moved: every analysis reads it from the new folder (`data.root=NEW`), a resumed run
trains on from there, and the advice names how to get the run's own dataset."""

from __future__ import annotations

import json
import shutil

import pytest

from fgvc import config
from fgvc.cli import main
from fgvc.data import synthetic
from fgvc.train import train


def _one_line(captured) -> str:
    assert "Traceback" not in captured.err, captured.err
    (line,) = [ln for ln in captured.err.splitlines() if ln.startswith("fgvc: ")]
    return line


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """(run, old root, new root): a 1-epoch run on cub200-layout data that was then moved."""
    base = tmp_path_factory.mktemp("moved")
    old = synthetic.generate(base / "old", classes=4, per_class=8, size=32, seed=0)
    run = train(config.load(None, ["model.name=test_resnet", "data.name=cub200", f"data.root={old}",
                                   "data.image_size=32", "train.epochs=2", "data.num_workers=0",
                                   "train.precision=32-true", f"out={base / 'runs'}"]), progress=False)
    assert main(["eval", str(run), "--json"]) == 0
    new = base / "new"
    shutil.move(old, new)
    return run, old, new


def test_an_analysis_of_a_moved_dataset_says_how_to_point_at_it_and_how_to_get_it(moved, capsys):
    run, old, _ = moved
    capsys.readouterr()
    for argv in (["eval", str(run)], ["explain", str(run), "--limit", "2"], ["attack", str(run), "--eps", "0,0.1"]):
        assert main(argv) == 2
        line = _one_line(capsys.readouterr())
        assert str(old) in line and "data.root=NEW" in line, line
        assert "fgvc data prepare cub200" in line and "data synth" not in line, line  # a real dataset's advice


def test_every_analysis_takes_the_new_data_location(moved, capsys):
    run, _, new = moved
    before = json.loads((run / "eval_test.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(run), f"data.root={new}", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["acc"] == before["acc"] and after["n"] == before["n"]
    assert main(["explain", str(run), f"data.root={new}", "--limit", "2", "--method", "gradcam"]) == 0
    assert main(["attack", str(run), "--eps", "0,0.1", f"data.root={new}", "--limit", "4"]) == 0
    # --compare's run trained on the same dataset: it is read from the new folder too
    twin = shutil.copytree(run, run.parent / "twin")
    assert main(["attack", str(run), "--eps", "0,0.1", f"data.root={new}", "--limit", "4", "--compare", str(twin)]) == 0
    curves = json.loads((run / "attack" / "fgsm_n4.json").read_text())["accuracy"]
    assert len(curves) == 2 and curves[run.name] == curves[twin.name]  # the same weights on the same images
    with pytest.raises(SystemExit) as e:  # only the location may change: argparse's usage and sentence
        main(["eval", str(run), "data.name=dogs"])
    assert e.value.code == 2 and "takes one setting, data.root=DIR" in capsys.readouterr().err


def test_resume_trains_on_from_the_new_data_location(moved, tmp_path, capsys):
    run, old, new = moved
    copy = shutil.copytree(run, tmp_path / run.name)
    assert main(["train", "--resume", str(copy), "--quiet", "train.epochs=3"]) == 2
    line = _one_line(capsys.readouterr())
    assert str(old) in line and f"--resume {copy} data.root=NEW" in line and "prepare cub200" in line
    assert main(["train", "--resume", str(copy), "--quiet", f"data.root={new}", "train.epochs=3"]) == 0
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["resumes"][-1]["changed"]["data.root"] == [str(old), str(new)]


def test_a_missing_root_names_the_datasets_own_way_to_get_it(tmp_path, capsys):
    from fgvc.data import build_dataset
    from fgvc.errors import UserError

    gone = tmp_path / "nowhere"
    for name, words, never in (("cub200", "fgvc data prepare cub200", "data synth"),
                               ("synthbirds", f"fgvc data synth --root {gone}", "prepare"),
                               ("synthdogs", "--layout dogs", "prepare"), ("dogs", "fgvc data prepare dogs", "synth"),
                               ("folder", "one folder per class", "fgvc data")):
        with pytest.raises(UserError) as e:
            build_dataset(name, gone, "test")
        assert words in str(e.value) and never not in str(e.value), (name, str(e.value))
        # CUB's advice also says how to make birds50 from it (the birds50 recipes read data.name=cub200)
        assert ("fgvc data birds50 --cub" in str(e.value)) == (name == "cub200"), (name, str(e.value))
