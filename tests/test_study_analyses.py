"""A study's ``baseline`` (paired differences per seed) and ``analyses`` (fgvc eval / fgvc attack on every
finished cell, their numbers as table columns)."""

import csv
import json
import os
import time

import pytest

from fgvc.cli import main
from fgvc.experiments.analyses import analysis_values, parse_analyses
from fgvc.experiments.seeds import paired_differences, paired_section
from fgvc.experiments.study import run_study
from fgvc.robust.run import checkpoint_fingerprint
from fgvc.scored_checkpoint import sha256

COMMON = ("model.name=test_resnet, data.image_size=32, train.epochs=1, data.num_workers=0, data.name=synthbirds, "
          "train.batch_size=16, train.accelerator=cpu, train.precision=32-true")
ANALYSES = "analyses:\n  eval: {tta: flip}\n  attack: {attack: fgsm, eps: [1/255, 2/255], limit: 8}\n"


def _study(tmp_path, extra=ANALYSES + "baseline: plain\n"):
    path = tmp_path / "analysed.yaml"
    path.write_text(f"title: analysed\noverrides: [{COMMON}]\ncolumns: [test_acc]\n{extra}"
                    "rows:\n  plain: []\n  smoothed: [aug.label_smoothing=0.3]\n")
    return path


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_paired_differences_are_row_minus_baseline_on_the_same_seed():
    per_seed = [{"row": "plain", "seed": 0, "a": 0.80}, {"row": "plain", "seed": 1, "a": 0.70},
                {"row": "m", "seed": 0, "a": 0.85}, {"row": "m", "seed": 1, "a": 0.71},
                {"row": "m", "seed": 2, "a": 0.99}]  # seed 2 has no baseline: left out, not compared to a mean
    assert paired_differences(per_seed, "m", "plain", "a") == pytest.approx([0.05, 0.01])
    lines = paired_section(per_seed, ["plain", "m"], "plain", ["a"])
    # mean 0.03, sample std of (0.05, 0.01) = 0.028284
    assert "| m | 2 | +0.0300 ± 0.0283 |" in lines[-1] and "a − plain" in lines[-1]
    assert not any(line.startswith("| plain |") for line in lines[-1].splitlines())


@pytest.mark.parametrize("spec, words", [
    ({"evaluate": {}}, "unknown analysis 'evaluate'"),
    ({"eval": {"tta": "flip", "split": "val"}}, "not split"),
    ({"eval": {"tta": "mirror"}}, "unknown test-time augmentation"),
    ({"attack": {"attack": "cw"}}, "cw"),
    ({"attack": {"eps": "2/255,x"}}, "not a number"),
    ({"attack": {"limit": 0}}, "limit must be a whole number"),
    ("eval", "must be a mapping"),
])
def test_bad_analyses_are_one_sentence(spec, words, tmp_path, capsys):
    from fgvc.errors import UserError

    with pytest.raises(UserError, match=words):
        parse_analyses(spec, "study x")


@pytest.mark.parametrize("baseline, shown", [("plane", "'plane'"), ("[plain]", "['plain']")])
def test_a_baseline_that_is_no_row_is_refused_before_anything_trains(baseline, shown, tmp_path, capsys):
    path = _study(tmp_path, extra=f"baseline: {baseline}\n")
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"baseline {shown} is not one of its rows (plain, smoothed)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_study_runs_its_analyses_and_tabulates_them_with_paired_differences(tiny_synthbirds_root, tmp_path,
                                                                                  capsys):
    path = _study(tmp_path)
    data = [f"data.root={tiny_synthbirds_root}"]
    folder = run_study(str(path), data, out=tmp_path / "out", progress=False, seeds="0,1")
    per_seed = {(r["row"], r["seed"]): r for r in _csv(folder / "table_seeds.csv")}
    for row in ("plain", "smoothed"):
        for seed in (0, 1):
            run = folder / row / f"seed{seed}"
            ev = json.loads((run / "eval_test.json").read_text())
            attack = json.loads((run / "attack" / "fgsm_n8.json").read_text())["accuracy"][f"seed{seed}"]
            line = per_seed[(row, str(seed))]
            # the table's numbers are the analyses' own, read from the files they wrote
            assert float(line["test_acc_tta"]) == pytest.approx(ev["tta"]["acc"])
            assert float(line["test_ece"]) == pytest.approx(ev["calibration"]["test"]["before"]["ece"])
            assert float(line["test_ece_temp"]) == pytest.approx(ev["calibration"]["test"]["after"]["ece"])
            assert float(line["fgsm@1/255"]) == pytest.approx(attack["1/255"])
            assert float(line["fgsm@2/255"]) == pytest.approx(attack["2/255"])
    table = (folder / "table.md").read_text()
    assert "Paired difference to plain" in table and "test_acc_tta − plain" in table
    diffs = [float(per_seed[("smoothed", s)]["test_acc"]) - float(per_seed[("plain", s)]["test_acc"]) for s in "01"]
    assert f"| smoothed | 2 | {sum(diffs) / 2:+.4f} ± " in table

    # a re-run finds every analysis done on the current checkpoints: nothing is evaluated again
    stamps = {p: p.stat().st_mtime_ns for p in [*folder.rglob("eval_test.json"), *folder.rglob("fgsm_n8.json")]}
    capsys.readouterr()
    run_study(str(path), data, out=tmp_path / "out", progress=False, seeds="0,1")
    out = capsys.readouterr().out
    assert "eval --tta flip" not in out and "attack fgsm" not in out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def _fake_run(run, acc=0.5):
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.safetensors").write_bytes(b"weights")
    (run / "metrics.json").write_text(json.dumps({"test_acc": acc}))
    return run


def test_analyses_of_another_checkpoint_give_empty_cells(tmp_path):
    run = _fake_run(tmp_path / "seed0")
    analyses = parse_analyses({"eval": {"tta": "flip"}, "attack": {"eps": [1 / 255]}}, "study x")
    (run / "eval_test.json").write_text(json.dumps({
        "acc": 0.5, "checkpoint": {"sha256": sha256(run / "checkpoints" / "best.safetensors")},
        "tta": {"mode": "flip", "acc": 0.6}, "calibration": {"test": {"before": {"ece": 0.2}, "after": {"ece": 0.05}}}}))
    (run / "attack").mkdir()
    attack_file = run / "attack" / "fgsm.json"
    attack_file.write_text(json.dumps({"checkpoints": {"seed0": checkpoint_fingerprint(run)},
                                       "accuracy": {"seed0": {"1/255": 0.3}}}))
    assert analysis_values(run, analyses) == {"test_acc_tta": 0.6, "test_ece": 0.2, "test_ece_temp": 0.05,
                                              "fgsm@1/255": 0.3}
    # the run trained on: a new best checkpoint, newer than the attack file and with another hash
    later = time.time() + 10
    (run / "checkpoints" / "best.safetensors").write_bytes(b"better weights")
    os.utime(run / "checkpoints" / "best.safetensors", (later, later))
    assert set(analysis_values(run, analyses).values()) == {None}
    os.utime(attack_file, (later + 10, later + 10))  # an attack file newer than the checkpoint is not enough
    assert analysis_values(run, analyses)["fgsm@1/255"] is None
    # an eval without the asked views is not a TTA number either
    assert analysis_values(run, parse_analyses({"eval": {"tta": "five-crop"}}, "x"))["test_acc_tta"] is None


def test_a_launched_job_runs_its_cells_analyses(tmp_path, monkeypatch):
    """The launchers' job (fgvc.experiments.launch.run_row) analyses its cell as the sequential study does."""
    import fgvc.experiments.launch as launch
    from fgvc.experiments.rows import read_study, row_config

    done = []
    monkeypatch.setattr(launch, "train_row", lambda row, spec, cfg, run_dir, **kw: _fake_run(run_dir))
    monkeypatch.setattr(launch, "run_analyses", lambda run_dir, analyses, progress: done.append((run_dir, analyses)))
    name, study = read_study(str(_study(tmp_path)))
    launch.run_row(name, study, "plain", row_config(study, "plain", []), str(tmp_path / "out"), ["plain/seed0"],
                   cell="plain/seed0")
    assert done == [(tmp_path / "out" / "plain" / "seed0", study["analyses"])]
    assert study["analyses"]["attack"] == {"attack": "fgsm", "eps": [1 / 255, 2 / 255], "limit": 8}
