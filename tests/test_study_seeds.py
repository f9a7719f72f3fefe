"""fgvc study --seeds: every row once per seed, mean +- sample std, resumable per seed, same through a launcher."""

import csv
import json

import numpy as np
import pytest

from fgvc.cli import main
from fgvc.experiments.seeds import parse_seeds
from fgvc.experiments.study import run_study

COMMON = ("model.name=test_resnet, data.image_size=32, train.epochs=1, data.num_workers=0, data.name=synthbirds, "
          "train.batch_size=16, train.accelerator=cpu, train.precision=32-true")
COLUMNS = ("val_acc", "test_acc", "train_loss")


def _study(tmp_path, rows="  plain: []\n  smoothed: [aug.label_smoothing=0.1]\n", extra=""):
    path = tmp_path / "seeded.yaml"
    path.write_text(f"title: seeded\noverrides: [{COMMON}]\ncolumns: [{', '.join(COLUMNS)}]\n{extra}rows:\n{rows}")
    return path


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_seeds_run_each_row_per_seed_and_the_table_is_numpys_mean_and_std(tiny_synthbirds_root, tmp_path, capsys):
    path = _study(tmp_path)
    code = main(["study", str(path), f"data.root={tiny_synthbirds_root}", "--out", str(tmp_path / "out"),
                 "--seeds", "0,1", "--quiet"])
    assert code == 0
    folder = tmp_path / "out" / "seeded"
    for row in ("plain", "smoothed"):
        assert not (folder / row / "metrics.json").exists()  # the runs are per seed, not per row
        for seed in (0, 1):
            run = folder / row / f"seed{seed}"
            assert f"seed: {seed}" in (run / "config.yaml").read_text()
            protocol = json.loads((run / "metrics.json").read_text())["protocol"]
            assert protocol["seed"] == seed and protocol["study_seeds"] == [0, 1]
    per_seed = _csv(folder / "table_seeds.csv")
    summary = {r["row"]: r for r in _csv(folder / "table.csv")}
    assert sorted((r["row"], r["seed"]) for r in per_seed) == [(r, s) for r in ("plain", "smoothed")
                                                               for s in ("0", "1")]
    for row in ("plain", "smoothed"):
        assert summary[row]["n"] == "2"
        for c in COLUMNS:
            from_runs = [json.loads((folder / row / f"seed{s}" / "metrics.json").read_text())[c] for s in (0, 1)]
            assert [float(r[c]) for r in per_seed if r["row"] == row] == from_runs
            assert float(summary[row][f"{c}_mean"]) == pytest.approx(np.mean(from_runs), abs=1e-12)
            assert float(summary[row][f"{c}_std"]) == pytest.approx(np.std(from_runs, ddof=1), abs=1e-12)
        # the seeds differ: the spread is a real one, not two copies of one run
        assert len({r["train_loss"] for r in per_seed if r["row"] == row}) == 2
    table = (folder / "table.md").read_text()
    assert "ddof=1" in table and "train_loss (mean ± std)" in table
    plain = summary["plain"]
    assert f"| plain | 2 | {float(plain['val_acc_mean']):.4f} ± {float(plain['val_acc_std']):.4f} |" in table
    assert "Per seed:" in table and (folder / "table.png").stat().st_size > 2000


def test_a_missing_seed_is_rerun_alone(tiny_synthbirds_root, tmp_path, capsys):
    path = _study(tmp_path, rows="  plain: []\n", extra="seeds: [0, 1]\n")  # seeds from the study file
    data = [f"data.root={tiny_synthbirds_root}"]
    folder = run_study(str(path), data, out=tmp_path / "out", progress=False)
    done = {s: (folder / "plain" / f"seed{s}" / "metrics.json").stat().st_mtime_ns for s in (0, 1)}
    (folder / "plain" / "seed1" / "metrics.json").unlink()  # as if seed 1 was killed before it finished
    before = _csv(folder / "table_seeds.csv")
    capsys.readouterr()
    run_study(str(path), data, out=tmp_path / "out", progress=False)
    out = capsys.readouterr().out
    assert "plain/seed0: finished earlier, skipped" in out and "[2/2] plain/seed1\n" in out
    assert (folder / "plain" / "seed0" / "metrics.json").stat().st_mtime_ns == done[0]
    assert (folder / "plain" / "seed1" / "metrics.json").stat().st_mtime_ns != done[1]
    assert _csv(folder / "table.csv")[0]["n"] == "2" and len(_csv(folder / "table_seeds.csv")) == len(before) == 2


def test_seeds_given_on_the_command_line_complete_the_files_seeds_in_the_table(tiny_synthbirds_root, tmp_path, capsys):
    path = _study(tmp_path, rows="  plain: []\n", extra="seeds: [0, 1]\n")
    data = [f"data.root={tiny_synthbirds_root}"]
    folder = run_study(str(path), data, out=tmp_path / "out", progress=False, seeds="0")  # seed 0 first
    assert [r["seed"] for r in _csv(folder / "table_seeds.csv")] == ["0"]
    run_study(str(path), data, out=tmp_path / "out", progress=False, seeds="1")  # then the missing one alone
    assert [r["seed"] for r in _csv(folder / "table_seeds.csv")] == ["0", "1"]  # not seed 1 alone
    assert _csv(folder / "table.csv")[0]["n"] == "2"
    run_study(str(path), data, out=tmp_path / "out", progress=False, seeds="2")  # a seed the file lacks
    assert [r["seed"] for r in _csv(folder / "table_seeds.csv")] == ["0", "1", "2"]


def test_a_tabled_seed_run_with_other_settings_refuses_the_call(tiny_synthbirds_root, tmp_path, capsys):
    path = _study(tmp_path, rows="  plain: []\n", extra="seeds: [0, 1]\n")
    out = ["--out", str(tmp_path / "out")]
    run_study(str(path), [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "out", progress=False, seeds="0")
    capsys.readouterr()
    code = main(["study", str(path), f"data.root={tiny_synthbirds_root}", "train.epochs=2", "--seeds", "1", *out])
    err = capsys.readouterr().err
    assert code == 2 and "seed0 finished with train.epochs=1, but this call asks for train.epochs=2" in err
    assert not (tmp_path / "out" / "seeded" / "plain" / "seed1").exists()  # refused before training


@pytest.mark.parametrize("text, words", [("a,b", "not 'a'"), ("1,1", "twice"), ("3-1", "empty"), ("-1", "0 or more")])
def test_bad_seeds_are_one_sentence(text, words, tmp_path, capsys):
    path = _study(tmp_path)
    assert main(["study", str(path), "data.root=x", "--out", str(tmp_path / "o"), f"--seeds={text}"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err
    assert parse_seeds("0-2,5") == [0, 1, 2, 5]


def test_mean_and_std_share_their_decimals_outside_accuracies():
    from fgvc.experiments.seeds import _pm

    assert _pm(2.33, 0.6788, "seconds") == "2.33 ± 0.68"
    assert _pm(1234.5, 56.7, "train_images_per_second") == "1234 ± 57"  # round half to even, as Python does
    assert _pm(0.91423, 0.00141, "test_acc") == "0.9142 ± 0.0014"
    assert _pm(3.0, 0.0, "seconds") == "3 ± 0"
