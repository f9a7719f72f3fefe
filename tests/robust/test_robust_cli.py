"""`fgvc attack` on a trained run, in-process."""

import json
import os
from pathlib import Path

import pytest

from fgvc.cli import main


def test_attack_command_writes_table_plot_and_json(tiny_synthbirds_root, tiny_run, tmp_path, capsys):
    common = ["model.name=test_resnet", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
              "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", "--quiet"]
    run_dir = str(tiny_run)
    assert main(["train", *common, "adv.attack=fgsm", "adv.eps=0.03"]) == 0
    adv_dir = capsys.readouterr().out.strip().splitlines()[-1]
    eps = "0,0.02,0.05,0.1"
    assert main(["attack", run_dir, "--eps", eps, "--limit", "16", "--compare", adv_dir]) == 0
    record = json.loads((tiny_run / "attack" / "fgsm_n16.json").read_text())
    curves = list(record["accuracy"].values())
    assert len(curves) == 2 and record["total"] == 16
    # the curves are named by what differs between the runs, not by their timestamped folders
    assert list(record["accuracy"]) == ["resnet18, adv.attack=none", "test_resnet, adv.attack=fgsm"]
    assert "| eps | resnet18, adv.attack=none | test_resnet, adv.attack=fgsm |" in \
        (tiny_run / "attack" / "fgsm_n16.md").read_text()
    for curve in curves:
        assert 0 <= curve["0.1"] <= curve["0"] <= 1  # an attack never raises accuracy above clean
    # each curve is its own run's: the one attacking that run alone gives (two models: curves that differ)
    assert curves[0] != curves[1]
    for run, label in ((adv_dir, "test_resnet, adv.attack=fgsm"), (run_dir, "resnet18, adv.attack=none")):
        assert main(["attack", run, "--eps", eps, "--limit", "16"]) == 0
        (alone,) = json.loads((Path(run) / "attack" / "fgsm_n16.json").read_text())["accuracy"].values()
        assert alone == record["accuracy"][label], run
    assert (tiny_run / "attack" / "fgsm_n16.png").stat().st_size > 1000
    assert main(["attack", run_dir, "--eps", "0,2"]) == 2
    assert "eps" in capsys.readouterr().err


def test_a_second_sweep_extends_the_curve_instead_of_replacing_it(tiny_run, capsys):
    run_dir = str(tiny_run)
    assert main(["attack", run_dir, "--eps", "0,0.1", "--limit", "12"]) == 0
    assert main(["attack", run_dir, "--eps", "0.05,0.1", "--limit", "12"]) == 0
    record = json.loads((tiny_run / "attack" / "fgsm_n12.json").read_text())
    (curve,) = record["accuracy"].values()
    assert list(curve) == ["0", "0.05", "0.1"] and set(record["settings"]) == {"0", "0.05", "0.1"}
    table = (tiny_run / "attack" / "fgsm_n12.md").read_text()
    assert "| 0.05 |" in table and "| 0 |" in table
    # another split or image count is another curve, in its own files
    assert main(["attack", run_dir, "--eps", "0.2", "--limit", "12", "--split", "val"]) == 0
    (val_curve,) = json.loads((tiny_run / "attack" / "fgsm_val_n12.json").read_text())["accuracy"].values()
    assert list(val_curve) == ["0.2"]
    (test_curve,) = json.loads((tiny_run / "attack" / "fgsm_n12.json").read_text())["accuracy"].values()
    assert test_curve == curve
    # a retrained checkpoint is another model: its sweep replaces the old curve instead of joining it
    best = tiny_run / "checkpoints" / "best.safetensors"
    os.utime(best, ns=(best.stat().st_atime_ns, best.stat().st_mtime_ns + 10**9))
    assert main(["attack", run_dir, "--eps", "0.2", "--limit", "12"]) == 0
    (curve,) = json.loads((tiny_run / "attack" / "fgsm_n12.json").read_text())["accuracy"].values()
    assert list(curve) == ["0.2"]
    capsys.readouterr()


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_a_limit_below_one_is_one_sentence_and_writes_nothing(tiny_run, tmp_path, capsys, limit):
    before = sorted(p.name for p in (tiny_run / "attack").glob("*")) if (tiny_run / "attack").is_dir() else []
    assert main(["attack", str(tiny_run), "--limit", limit]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"fgvc: --limit {limit}: attack at least 1 image, or leave --limit out for the " \
                                   "whole split" and "Traceback" not in captured.err
    after = sorted(p.name for p in (tiny_run / "attack").glob("*")) if (tiny_run / "attack").is_dir() else []
    assert after == before


@pytest.mark.parametrize("argv, flag, users", [
    (["--attack", "fgsm", "--alpha", "0.01"], "--alpha", "ifgsm, rs-fgsm, pgd"),
    (["--attack", "fgsm", "--steps", "3"], "--steps", "ifgsm, pgd"),
    (["--attack", "rs-fgsm", "--steps", "5"], "--steps", "ifgsm, pgd"),
])
def test_a_setting_the_attack_does_not_take_is_refused_not_ignored(tiny_run, capsys, argv, flag, users):
    assert main(["attack", str(tiny_run), *argv, "--limit", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fgvc: {flag} does not apply to --attack {argv[1]}; drop it, or use one of {users}"


@pytest.mark.parametrize("attack, setting, words", [
    ("fgsm", "adv.alpha=0.3", ["adv.alpha=0.3", "adv.attack=fgsm", "adv.loss_weight"]),
    ("rs-fgsm", "adv.steps=3", ["adv.steps=3", "adv.attack=rs-fgsm", "pgd"]),
])
def test_a_training_attack_setting_the_attack_ignores_is_refused_before_anything_is_written(
        tmp_path, capsys, attack, setting, words):
    out = tmp_path / "runs"
    assert main(["train", "model.name=test_resnet", "data.name=synthbirds", f"data.root={tmp_path}",
                 f"adv.attack={attack}", setting, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    assert not out.exists()


def test_pgd_training_keeps_its_alpha_and_steps():
    from fgvc import config
    from fgvc.robust.training import check_adv_settings

    cfg = config.apply(config.Config(), {"adv.attack": "pgd", "adv.alpha": "0.01", "adv.steps": "3"})
    check_adv_settings(cfg.adv)  # both are used by PGD: nothing to refuse


def test_a_bad_compare_run_is_refused_before_any_model_loads(tiny_run, tmp_path, monkeypatch, capsys):
    from fgvc import api

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before --compare was checked")

    monkeypatch.setattr(api, "load", no_model)
    assert main(["attack", str(tiny_run), "--compare", str(tmp_path / "nope"), "--limit", "4"]) == 2
    assert "nope" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"  # a run folder whose first epoch never finished: no checkpoint
    unfinished.mkdir()
    for name in ("config.yaml", "classes.json"):
        (unfinished / name).write_bytes((tiny_run / name).read_bytes())
    assert main(["attack", str(tiny_run), "--compare", str(unfinished), "--limit", "4"]) == 2
    assert "no checkpoints/best.safetensors" in capsys.readouterr().err
