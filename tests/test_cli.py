"""The `fgvc` command end to end, in-process."""

import json

import pytest

from fgvc.cli import main

FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=16", "train.lr=2e-3",
        "train.patience=0", "data.num_workers=0", "train.epochs=1"]


def _no_traceback(captured):
    assert "Traceback" not in captured.err and "Traceback" not in captured.out


def test_train_eval_predict_round_trip(tiny_synthbirds_root, tmp_path, capsys):
    code = main(["train", *FAST, "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                 f"out={tmp_path}", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    run_dir = out.strip().splitlines()[-1]
    assert (tmp_path / run_dir.split("/")[-1] / "metrics.json").is_file()

    assert main(["eval", run_dir, "--split", "val", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= result["acc"] <= 1 and result["n"] > 0

    image = next((tiny_synthbirds_root / "CUB_200_2011" / "images").rglob("*.jpg"))
    assert main(["predict", run_dir, str(image), "--topk", "3", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    probs = [p["prob"] for p in preds[0]["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6


def test_train_with_a_shipped_config_name_and_overrides(tiny_synthbirds_root, tmp_path, capsys):
    code = main(["train", "synthbirds_cpu", *FAST, f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", "--quiet"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "train.lr=-1"], "train.lr"),
    (["train", "train.lrr=1"], "did you mean"),
    (["train", "no_such_recipe"], "no shipped config"),
    (["train", "data.root=/nonexistent/fgvc", "data.name=cub200", "train.epochs=1"], "does not exist"),
    (["train", "data.name=cub201"], "unknown dataset"),
    (["eval", "/nonexistent/run"], "not an fgvc run directory"),
    (["predict", "/nonexistent/run", "x.jpg"], "not an fgvc run directory"),
])
def test_bad_input_is_one_sentence_and_exit_code_2(argv, message, capsys, tmp_path):
    assert main(argv + [f"out={tmp_path}"] if argv[0] == "train" else argv) == 2
    captured = capsys.readouterr()
    _no_traceback(captured)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fgvc: ") and message in lines[0]


def test_unknown_model_exits_2(tiny_synthbirds_root, tmp_path, capsys):
    code = main(["train", "model.name=resnet05", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                 f"out={tmp_path}", "train.epochs=1", "--quiet"])
    assert code == 2 and "resnet50" in capsys.readouterr().err


def test_data_synth_then_info(tmp_path, capsys):
    root = tmp_path / "birds"
    assert main(["data", "synth", "--root", str(root), "--classes", "3", "--per-class", "4", "--size", "32"]) == 0
    assert main(["data", "info", "synthbirds", "--root", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["num_classes"] == 3


def test_predict_on_an_undecodable_file_names_it(tiny_run, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    assert main(["predict", str(tiny_run), str(bad)]) == 2
    assert "broken.jpg" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_a_missing_image_file_is_named_without_blaming_the_dataset(command, tiny_run, tmp_path, capsys):
    missing = tmp_path / "no_such_bird.jpg"
    assert main([command, str(tiny_run), str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fgvc: image ") and "no_such_bird.jpg is not a file" in err and "dataset root" not in err
    assert not (tiny_run / "explain").exists()  # nothing made before the refusal


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1"]) == 0
    assert "test acc" in capsys.readouterr().out


def test_a_bad_data_root_is_not_preceded_by_lightnings_precision_banner(tmp_path, capsys):
    import logging

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("lightning_fabric.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        assert main(["train", "data.root=/nonexistent/fgvc", "data.name=cub200", "train.precision=bf16-mixed",
                     "train.accelerator=cpu", f"out={tmp_path}"]) == 2
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "Mixed Precision" in m], seen  # the error is the only thing the user reads
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("argv, words", [
    (["train", "model.name=resnet18"], "fgvc train --resume RUN_DIR"),
    (["gan", "train", "iterations=2"], "fgvc gan train --resume RUN_DIR"),
    (["study", "table1_depth", "data.root=x"], "the same `fgvc study` command continues"),
])
def test_an_interrupted_long_command_says_how_to_continue(monkeypatch, capsys, argv, words):
    import fgvc.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.HANDLERS, argv[0], interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("fgvc: interrupted") and words in err and err.count("\n") == 1


def test_eval_prints_no_lightning_precision_banner(tiny_run, tmp_path):
    import logging
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")  # eval writes into the run: not the shared one
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("lightning_fabric.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        assert main(["eval", str(run), "--split", "val", "--precision", "bf16-mixed", "--device", "cpu"]) == 0
    finally:
        logger.removeHandler(handler)
    assert not [m for m in seen if "Mixed Precision" in m], seen


def test_an_interrupted_training_names_its_own_run_directory(tiny_synthbirds_root, tmp_path, monkeypatch, capsys):
    from fgvc.train import tricks

    calls = []
    real = tricks.soft_cross_entropy

    def ctrl_c_in_epoch_2(*args, **kwargs):  # the user presses ^C during the second epoch
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tricks, "soft_cross_entropy", ctrl_c_in_epoch_2)
    assert main(["train", "model.name=test_resnet", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                 "data.image_size=32", "train.epochs=3", "train.batch_size=8", "data.num_workers=0",
                 f"out={tmp_path}", "--quiet"]) == 130
    (run_dir,) = tmp_path.iterdir()
    err = capsys.readouterr().err
    assert f"`fgvc train --resume {run_dir}` continues" in err and "RUN_DIR" not in err, err
