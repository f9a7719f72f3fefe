"""A run names its data by an absolute path, so it is read from any folder later (eval, explain,
resume); a run written before that, with a relative data.root, still resumes from where it ran."""

import shutil

import yaml

from fgvc import config, runs
from fgvc.cli import main


def _train_here(tmp_path, monkeypatch, tiny_synthbirds_root, *extra):
    shutil.copytree(tiny_synthbirds_root, tmp_path / "work" / "birds")
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "model.name=test_resnet", "data.name=synthbirds", "data.root=birds", "data.image_size=32",
                 "train.epochs=1", "data.num_workers=0", "out=runs", "--quiet", *extra]) == 0
    (run,) = (tmp_path / "work" / "runs").iterdir()
    return run


def test_a_run_trained_on_a_relative_root_is_evaluated_from_another_folder(tmp_path, monkeypatch,
                                                                          tiny_synthbirds_root, capsys):
    run = _train_here(tmp_path, monkeypatch, tiny_synthbirds_root)
    assert runs.load_config(run).data.root == str(tmp_path / "work" / "birds")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "test"]) == 0, capsys.readouterr().err


def test_a_run_from_before_absolute_roots_still_resumes_where_it_ran(tmp_path, monkeypatch, tiny_synthbirds_root):
    run = _train_here(tmp_path, monkeypatch, tiny_synthbirds_root, "train.epochs=2")
    # as an older fgvc wrote it: the root as given, relative to the folder training ran in
    text = yaml.safe_load((run / "config.yaml").read_text())
    text["data"]["root"] = "birds"
    (run / "config.yaml").write_text(yaml.safe_dump(text))
    (run / "metrics.json").unlink()  # unfinished: resumable
    assert main(["train", "--resume", str(run), "train.epochs=3", "--quiet"]) == 0  # not "cannot change data.root"
    assert runs.read_metrics(run)["epochs_run"] == 3
    assert config.load(run / "config.yaml").data.root == str(tmp_path / "work" / "birds")
