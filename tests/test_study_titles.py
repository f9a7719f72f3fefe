"""Study tables and plots state the settings that ran (overrides), not the shipped ones."""


def test_study_title_states_the_settings_that_ran():
    from fgvc.experiments.study import ran_title

    shipped = "birds50 - training tricks, resnet18 from scratch, 96 px, 20 epochs"
    ran = [{"data.image_size": 64, "train.epochs": 2}, {"data.image_size": 64, "train.epochs": 2}]
    title = ran_title(shipped, ran)
    assert "64 px" in title and "2 epochs" in title and "96 px" not in title and "20 epochs" not in title
    mixed = ran_title(shipped, [{"data.image_size": 64, "train.epochs": 2}, {"data.image_size": 96, "train.epochs": 2}])
    assert "96 px" not in mixed and "varying px" in mixed
    plain = ran_title("Table 1 - ResNet depth (CUB-200-2011, from scratch)", ran)
    assert plain.endswith("(as run: 64 px, 2 epochs)")
    assert ran_title(shipped, []) == shipped  # nothing ran yet


def test_study_plot_title_is_wrapped_not_cut(tmp_path, monkeypatch):
    from fgvc.experiments import tables

    figures = []
    monkeypatch.setattr(tables.runs, "save_figure", lambda fig, path, **kw: figures.append(fig))
    title = "birds50 - training tricks, resnet18 from scratch, 64 px, 2 epochs, and a tail that runs past ninety chars"
    tables._plot_table([{"row": "a", "test_acc": 0.5}], ["test_acc"], title, tmp_path / "t.png")
    assert figures[0].axes[0].get_title().replace("\n", " ") == title


def test_study_table_title_reads_the_rows_config(tmp_path, monkeypatch):
    from fgvc import config
    from fgvc.experiments import tables

    row = tmp_path / "baseline"
    row.mkdir()
    cfg = config.load(None, ["data.image_size=64", "train.epochs=2"])
    (row / "config.yaml").write_text(config.dump(cfg))
    (row / "metrics.json").write_text("{}")
    seen = {}
    monkeypatch.setattr(tables, "write_table", lambda folder, rows, columns, title, analyses=None: seen.setdefault("title", title))
    tables.write_tables(tmp_path, {"rows": {"baseline": {}, "not_run": {}},
                                   "title": "birds50 - tricks, resnet18 from scratch, 96 px, 20 epochs"}, "s")
    assert seen["title"] == "birds50 - tricks, resnet18 from scratch, 64 px, 2 epochs"


def test_a_one_epoch_study_title_says_epoch():
    from fgvc.experiments.study import ran_title

    title = ran_title("table - 96 px, 20 epochs", [{"data.image_size": 32, "train.epochs": 1}])
    assert title == "table - 32 px, 1 epoch"


def test_a_title_names_the_model_pretraining_and_data_an_override_swapped_in():
    from fgvc.experiments.study import ran_title

    defined = [{"model.name": "resnet50", "model.pretrained": True, "data.name": "cub200"}] * 2
    ran = [{"data.image_size": 32, "train.epochs": 1, "model.name": "resnet18", "model.pretrained": False,
            "data.name": "synthbirds"}] * 2
    title = ran_title("Table 4 - training tricks (pretrained ResNet-50)", ran, defined)
    assert title.endswith("(as run: 32 px, 1 epoch, resnet18, from scratch, synthbirds)")
    as_defined = [{**r, "model.name": "resnet50", "model.pretrained": True, "data.name": "cub200"} for r in ran]
    assert ran_title("Table 4 (pretrained ResNet-50)", as_defined, defined).endswith("(as run: 32 px, 1 epoch)")
    # a study whose rows differ in a setting (Table 1's depths) says nothing about it
    assert "resnet" not in ran_title("Table 1", [{**ran[0], "model.name": "resnet34"}, ran[0]], defined)


def test_the_written_table_title_compares_the_rows_that_ran_with_the_study_s_own(tmp_path, monkeypatch):
    from fgvc import config
    from fgvc.experiments import tables

    row = tmp_path / "baseline"
    row.mkdir()
    (row / "config.yaml").write_text(config.dump(config.load(None, ["model.name=resnet18", "train.epochs=2"])))
    (row / "metrics.json").write_text("{}")
    seen = {}
    monkeypatch.setattr(tables, "write_table", lambda folder, rows, columns, title, analyses=None: seen.setdefault("title", title))
    tables.write_tables(tmp_path, {"rows": {"baseline": {}}, "title": "tricks (ResNet-50), 20 epochs"}, "s")
    assert seen["title"] == "tricks (ResNet-50), 2 epochs (as run: 224 px, resnet18)"
