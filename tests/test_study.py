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
    run_study(str(path), [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "out", progress=False)
    assert (folder / "plain" / "metrics.json").stat().st_mtime_ns == first
    assert "skipped" in capsys.readouterr().out


def test_a_bad_row_is_refused_before_anything_trains(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rows:\n  ok: []\n  broken: [train.lr=-1]\n")
    with pytest.raises(UserError, match="train.lr"):
        run_study(str(path), ["data.root=x"], out=tmp_path)
    assert not (tmp_path / "bad").exists()


def test_a_clip_row_takes_its_data_from_the_study_and_its_own_overrides():
    _, study = read_study("table9_datasets")
    for row, dataset in (("cub_clip_g14_zeroshot", "cub200"), ("dogs_clip_g14_zeroshot", "dogs")):
        fn, kwargs = clip_row(study["rows"][row], row, row_config(study, row, ["data.root=somewhere"]))
        assert fn.__name__ == "run_zeroshot" and kwargs["dataset_name"] == dataset
        assert kwargs["root"] == "somewhere" and kwargs["model_name"] == "ViT-g-14"
