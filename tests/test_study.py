import pytest

from fgvc.errors import UserError
from fgvc.experiments.study import clip_row, read_study, row_config, row_kind, run_study, study_names


def test_every_shipped_study_validates_every_row():
    for name in study_names():
        _, study = read_study(name)
        for row, spec in study["rows"].items():
            cfg = row_config(study, row, ["data.root=somewhere"])
            if row_kind(spec) == "clip":  # probe rows are training configs
                clip_row(spec, row, cfg)


def test_study_runs_rows_writes_table_and_skips_finished_rows(tiny_synthbirds_root, tmp_path, capsys):
    path = tmp_path / "mini.yaml"
    path.write_text(
        "# fgvc study mini.yaml\ntitle: mini\n"
        "overrides: [model.name=test_resnet, data.image_size=32, train.epochs=1, data.num_workers=0, data.name=synthbirds]\n"
        "columns: [test_acc]\nrows:\n  plain: []\n  smoothed: [aug.label_smoothing=0.1]\n")
    folder = run_study(str(path), [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "out", progress=False)
    table = (folder / "table.md").read_text()
    assert "| plain |" in table and "| smoothed |" in table
    assert "![accuracy per row](table.png)" in table and (folder / "table.png").stat().st_size > 2000
    # the report embeds the study's plot with a link that works from where the report is written
    from fgvc.report import write_report

    report = write_report(tmp_path / "out", tmp_path / "elsewhere").read_text()
    link = report.split("![accuracy per row](", 1)[1].split(")", 1)[0]
    assert (tmp_path / "elsewhere" / link).resolve() == (folder / "table.png").resolve()
    first = (folder / "plain" / "metrics.json").stat().st_mtime_ns
    # the same study from a moved data folder, with other loader workers: still the finished runs
    moved = tmp_path / "moved"
    moved.symlink_to(tiny_synthbirds_root, target_is_directory=True)
    run_study(str(path), [f"data.root={moved}", "data.num_workers=1"], out=tmp_path / "out", progress=False)
    assert (folder / "plain" / "metrics.json").stat().st_mtime_ns == first
    assert "skipped" in capsys.readouterr().out
    # ... but a finished row is never passed off as a run with other settings (a smoke test, then the study)
    table_before = (folder / "table.md").read_text()
    with pytest.raises(UserError, match=r"plain finished with train.epochs=1, but this call asks for train.epochs=3"):
        run_study(str(path), [f"data.root={tiny_synthbirds_root}", "train.epochs=3"], out=tmp_path / "out",
                  progress=False)
    with pytest.raises(UserError, match=r"smoothed finished with aug.label_smoothing=0.1, .* asks for aug.label_smoothing=0.2"):
        run_study(str(path), [f"data.root={tiny_synthbirds_root}", "aug.label_smoothing=0.2"], out=tmp_path / "out",
                  progress=False, only=["smoothed"])
    assert (folder / "plain" / "metrics.json").stat().st_mtime_ns == first
    assert (folder / "table.md").read_text() == table_before


def test_a_bad_row_is_refused_before_anything_trains(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rows:\n  ok: []\n  broken: [train.lr=-1]\n")
    with pytest.raises(UserError, match="train.lr"):
        run_study(str(path), ["data.root=x"], out=tmp_path)
    assert not (tmp_path / "bad").exists()


def test_a_row_the_training_preflight_refuses_stops_the_study_before_its_first_row_trains(tmp_path):
    """A later row's combination that only train()'s preflight knows (a method that cannot take loss.center)
    is refused before the first row trains, not hours later when that row starts."""
    path = tmp_path / "late.yaml"
    path.write_text("rows:\n  ok: []\n  wsdan_center: [method.name=wsdan, loss.center=0.003]\n")
    with pytest.raises(UserError, match="loss.center"):
        run_study(str(path), ["data.root=x"], out=tmp_path)
    assert not (tmp_path / "late").exists()


def test_a_clip_row_takes_its_data_from_the_study_and_its_own_overrides():
    _, study = read_study("table9_datasets")
    for row, dataset in (("cub_clip_g14_zeroshot", "cub200"), ("dogs_clip_g14_zeroshot", "dogs")):
        fn, kwargs = clip_row(study["rows"][row], row, row_config(study, row, ["data.root=somewhere"]))
        assert fn.__name__ == "run_zeroshot" and kwargs["dataset_name"] == dataset
        assert kwargs["root"] == "somewhere" and kwargs["model_name"] == "ViT-g-14"


def _row(study_name: str, row: str) -> dict:
    from fgvc import config

    _, study = read_study(study_name)
    return config.to_dict(row_config(study, row, ["data.root=data"]))


@pytest.mark.parametrize("row_a, row_b", [
    # one seed number, one run: Table 9's CUB cells are Table 4's last row (0.8351) and Table 7's row 2 (0.8019)
    (("table4_tricks", "resnext101+tricks"), ("table9_datasets", "cub_resnext101")),
    (("table5_vit_depth", "mixup+ls"), ("table9_datasets", "cub_vit_b16")),
])
def test_a_seed_number_quoted_in_two_tables_is_the_same_run(row_a, row_b):
    assert _row(*row_a) == _row(*row_b)


def test_table7_rows_keep_table5s_heads_plus_12_blocks_depth():
    # the seed's Table 7 baseline (0.7984) is Table 5's heads+12attn, not the whole ViT
    heads12 = _row("table5_vit_depth", "heads+12")
    for row in ("mixup+ls", "mixup+ls+dropout"):
        cfg = _row("table5_vit_depth", row)
        assert cfg["model"]["trainable"] == heads12["model"]["trainable"] == "head+blocks:12"
        assert cfg["train"] == heads12["train"] and cfg["aug"]["mixup_alpha"] == 0.2


def test_study_data_flag_runs_every_row_on_that_dataset_and_a_key_value_wins(monkeypatch, tmp_path):
    import fgvc.experiments.study as study_mod
    from fgvc.cli import main

    asked = {}

    def fake_run_study(name, overrides, **kwargs):
        _, study = read_study(name)
        asked.update({row: row_config(study, row, overrides).data.name for row in study["rows"]})
        (tmp_path / "table.md").write_text("")
        return tmp_path

    monkeypatch.setattr(study_mod, "run_study", fake_run_study)
    assert main(["study", "table4_tricks", "--data", "dogs", "data.root=x"]) == 0
    assert set(asked.values()) == {"dogs"} and len(asked) == 8
    assert main(["study", "table4_tricks", "--data", "dogs", "data.root=x", "data.name=synthbirds"]) == 0
    assert set(asked.values()) == {"synthbirds"}


def test_a_finished_row_as_training_wrote_it_is_the_run_asked_for(tmp_path, monkeypatch, capsys):
    # training fills in model.weights_sha256 and makes paths absolute; --resume may have changed the batch size
    import copy
    import json

    from fgvc import config
    from fgvc.experiments.study import check_finished_cells

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text("rows:\n  a: [model.weights=w.safetensors, data.generated_root=SAMPLES]\n  b: []\n")
    _, study = read_study(str(path))
    asked = {row: row_config(study, row, ["data.root=data"]) for row in study["rows"]}
    for row, (key, value) in {"a": ("model.weights_sha256", "ab" * 32), "b": ("train.batch_size", 8)}.items():
        ran = config.apply(copy.deepcopy(asked[row]), {key: value, "data.root": str(tmp_path / "data"),
                                                        "data.generated_root": str(tmp_path / "SAMPLES") if row == "a"
                                                        else ""})
        (tmp_path / "out" / row).mkdir(parents=True)
        (tmp_path / "out" / row / "config.yaml").write_text(config.dump(ran))
        resumes = [{"epoch": 3, "changed": {"train.batch_size": [16, 8]}}] if row == "b" else []
        (tmp_path / "out" / row / "metrics.json").write_text(json.dumps({"test_acc": 0.5, "resumes": resumes}))
    check_finished_cells(tmp_path / "out", {"a": "a", "b": "b"}, study, asked)  # nothing refused
    assert "b: finished with train.batch_size=8, changed on --resume; kept" in capsys.readouterr().out
    asked["a"] = row_config(study, "a", ["data.root=data", "model.weights_sha256=" + "cd" * 32])
    with pytest.raises(UserError, match="model.weights_sha256="):  # a hash the user gives is compared
        check_finished_cells(tmp_path / "out", {"a": "a"}, study, asked)


def test_study_data_flag_is_refused_where_rows_choose_their_dataset(capsys):
    from fgvc.cli import main

    assert main(["study", "table9_datasets", "--data", "aircraft", "data.root=x"]) == 2
    err = capsys.readouterr().err
    assert "chooses the dataset per row" in err and "dogs_resnext101" in err and err.count("\n") == 1
