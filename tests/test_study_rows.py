"""Study rows are parsed once into {dotted key: value}: a list of key=value strings and a mapping of dotted
keys give the same run, values holding '=' or ',' survive, and a bad key names its row."""

import json

import pytest
import yaml

from fgvc import config
from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.experiments.study import read_study, row_config, run_study

BASE = ["model.name=test_resnet", "data.name=synthbirds", "data.image_size=32", "train.accelerator=cpu"]


def _study(tmp_path, rows: dict, name="rows"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"title": name, "overrides": BASE, "rows": rows}, sort_keys=False))
    return path


def _configs(path, extra=("data.root=somewhere",)):
    _, study = read_study(str(path))
    return {row: config.to_dict(row_config(study, row, list(extra))) for row in study["rows"]}


@pytest.mark.parametrize("mapping", [
    {"aug.geometric": True, "train.seed": 1, "train.milestones": [3, 6], "train.lr": 1e-3},
    {"aug": {"geometric": True}, "train": {"seed": 1, "milestones": [3, 6], "lr": "1e-3"}},  # nested sections
])
def test_a_mapping_row_and_the_equivalent_list_row_resolve_to_the_same_config(tmp_path, mapping):
    as_list = ["aug.geometric=true", "train.seed=1", "train.milestones=[3,6]", "train.lr=1e-3"]
    configs = _configs(_study(tmp_path, {"as_list": as_list, "as_mapping": mapping, "plain": []}))
    assert configs["as_mapping"] == configs["as_list"]
    assert configs["as_mapping"] != configs["plain"]  # the row's values reached the config
    assert configs["as_mapping"]["aug"]["geometric"] is True and configs["as_mapping"]["train"]["seed"] == 1
    assert configs["as_mapping"]["train"]["milestones"] == [3, 6]


def test_values_holding_equals_signs_and_commas_survive(tmp_path):
    rows = {
        "as_list": ["train.milestones=[3,6]", "data.root=/data/run=1,a", "data.classes=0-2,5"],
        "as_mapping": {"train.milestones": [3, 6], "data.root": "/data/run=1,a", "data.classes": "0-2,5",
                       "data.generated_root": None},  # YAML null: an empty string, not the text 'None'
    }
    configs = _configs(_study(tmp_path, rows), extra=())
    for row in rows:
        assert configs[row]["train"]["milestones"] == [3, 6]
        assert configs[row]["data"]["root"] == "/data/run=1,a"
        assert configs[row]["data"]["classes"] == "0-2,5"
        assert configs[row]["data"]["generated_root"] == ""
    # a command-line override with '=' in its value, over the row's, survives too
    assert _configs(_study(tmp_path, rows), ["data.root=/x/a=b,c"])["as_mapping"]["data"]["root"] == "/x/a=b,c"


@pytest.mark.parametrize("row, words", [
    ({"aug.geometirc": True}, ["'broken'", "'aug.geometirc'", "did you mean aug.geometric"]),
    ({"aug": {"geometirc": True}}, ["'broken'", "'aug.geometirc'"]),
    ({"train.epochs": "ten"}, ["'broken'", "'train.epochs'", "integer"]),
    (["aug.geometirc=true"], ["'broken'", "'aug.geometirc'"]),
    (["aug.geometric"], ["'broken'", "not key=value"]),
])
def test_a_bad_key_in_a_row_is_one_sentence_naming_the_row_and_the_key(tmp_path, capsys, row, words):
    path = _study(tmp_path, {"ok": {"aug.geometric": True}, "broken": row})
    with pytest.raises(UserError) as e:
        read_study(str(path))
    assert all(w in str(e.value) for w in words), str(e.value)
    assert str(path) in str(e.value)
    assert main(["study", str(path), "data.root=x", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'broken'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_mapping_row_reaches_training_in_the_study_and_in_a_launched_job(tmp_path, monkeypatch):
    import fgvc.train
    from fgvc.experiments.launch import run_row

    trained = {}

    def fake_train(cfg, run_dir, resume=False, progress=True, after=None):
        trained[run_dir.name] = cfg
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps({"train_acc": 0.5 if cfg.aug.geometric else 0.25}))

    monkeypatch.setattr(fgvc.train, "train", fake_train)
    path = _study(tmp_path, {"plain": [], "geometric": {"aug.geometric": True, "data.root": "/d/a=b"}})
    folder = run_study(str(path), ["train.seed=3"], out=tmp_path / "out", progress=False)
    assert trained["geometric"].aug.geometric and not trained["plain"].aug.geometric
    assert trained["geometric"].data.root == "/d/a=b" and trained["geometric"].train.seed == 3
    assert "| geometric | 0.5000 |" in (folder / "table.md").read_text()
    # the launchers' job (one pickled call per row) takes the rows as read_study parsed them
    name, study = read_study(str(path))
    cfg = row_config(study, "geometric", ["train.seed=4"])
    trained.clear()
    run_row(name, study, "geometric", cfg, str(tmp_path / "launched"), ["geometric"])
    assert trained["geometric"].aug.geometric and trained["geometric"].train.seed == 4


def test_every_shipped_training_row_resolves_as_its_key_value_strings_do():
    """The shipped files' rows (lists of key=value strings; CLIP rows with data.* overrides) give the config that
    fgvc.config.load gives the same strings: parsing rows once changed no shipped run."""
    from fgvc.experiments.study import STUDY_DIR, row_kind, study_names

    checked = 0
    for name in study_names():
        raw = config.read_yaml(STUDY_DIR / f"{name}.yaml")
        _, study = read_study(name)
        base = raw.get("base")
        base_path = base if base and (STUDY_DIR / base).is_file() else config.shipped_config(base) if base else None
        for row, spec in raw["rows"].items():
            strings = spec if isinstance(spec, list) else (spec or {}).get("overrides") or []
            expected = config.load(base_path, [*(raw.get("overrides") or []), *strings, "data.root=somewhere"])
            got = row_config(study, row, ["data.root=somewhere"])
            assert config.to_dict(got) == config.to_dict(expected), (name, row)
            checked += row_kind(study["rows"][row]) == "train"
    assert checked > 50
