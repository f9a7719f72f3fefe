import re

import pytest

from fgvc import config
from fgvc.errors import UserError


def test_defaults_are_the_papers():
    cfg = config.load()
    assert cfg.train.lr == 5e-5 and cfg.train.weight_decay == 1e-3 and cfg.train.batch_size == 16
    assert cfg.train.milestones == [30, 60, 90] and cfg.train.gamma == 0.1 and cfg.train.patience == 20


def test_overrides_are_parsed_to_the_field_type():
    cfg = config.load(None, ["train.lr=1e-3", "train.milestones=[5,8]", "aug.geometric=true", "train.epochs=3"])
    assert cfg.train.lr == 1e-3 and cfg.train.milestones == [5, 8]
    assert cfg.aug.geometric is True and cfg.train.epochs == 3


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(UserError, match="train.lr"):
        config.load(None, ["train.lrr=1"])


@pytest.mark.parametrize("item, match", [
    ("train.epochs=three", "integer"),
    ("train.lr=-1", "positive"),
    ("train.batch_size=0", "1 or more"),
    ("adv.eps=2", r"\[0, 1\]"),
    ("aug.geometric=maybe", "true or false"),
    ("train.lr", "key=value"),
    ("train.lr=nan", "finite"),
    ("train.channels_last=sometimes", "one of auto, true, false"),
    ("data.cache=maybe", "one of off, auto, on"),
])
def test_bad_values_are_one_clear_error(item, match):
    with pytest.raises(UserError, match=match):
        config.load(None, [item])


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# fgvc train c.yaml\nmodel:\n  name: resnet18\ntrain:\n  epochs: 4\n  lr: 0.001\n")
    cfg = config.load(path, ["train.epochs=2"])
    assert cfg.model.name == "resnet18" and cfg.train.epochs == 2 and cfg.train.lr == 1e-3


def test_yaml_with_unknown_section_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("modle:\n  name: resnet18\n")
    with pytest.raises(UserError, match="unknown config key 'modle.name'"):
        config.load(path)


def test_broken_yaml_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="c.yaml"):
        config.load(path)


def test_dump_round_trips(tmp_path):
    cfg = config.load(None, ["model.name=resnet34", "aug.mixup_alpha=0.2"])
    path = tmp_path / "config.yaml"
    path.write_text(config.dump(cfg))
    assert config.load(path) == cfg


def test_every_shipped_config_loads_and_starts_with_its_command():
    from pathlib import Path

    folder = Path(config.__file__).parent / "configs"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for path in files:
        assert path.read_text().startswith("# fgvc "), path.name
        config.load(path)


def test_auto_workers_keep_small_cpus_free_for_the_model(monkeypatch):
    from fgvc.data import resolve_num_workers

    assert config.load().data.num_workers == -1
    assert resolve_num_workers(3, cuda=False) == 3  # an explicit value is kept
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_num_workers(-1, cuda=False) == 0 and resolve_num_workers(-1, cuda=True) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert resolve_num_workers(-1, cuda=False) == 4 and resolve_num_workers(-1, cuda=True) == 8


@pytest.mark.parametrize("given, expected", [("auto", "auto"), ("Auto", "auto"), ("true", "true"), ("True", "true"),
                                             ("yes", "true"), ("on", "true"), ("1", "true"), ("false", "false"),
                                             ("no", "false"), ("0", "false")])
def test_channels_last_takes_the_spellings_its_bool_days_did(given, expected):
    assert config.load(None, [f"train.channels_last={given}"]).train.channels_last == expected


def test_an_older_config_yaml_with_yaml_booleans_still_loads(tmp_path):
    # train.channels_last was a bool (config.yaml says false); YAML reads data.cache: on / off as booleans too
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  channels_last: false\ndata:\n  cache: on\n")
    cfg = config.load(path)
    assert (cfg.train.channels_last, cfg.data.cache) == ("false", "on")
    path.write_text("train:\n  channels_last: true\ndata:\n  cache: off\n")
    cfg = config.load(path)
    assert (cfg.train.channels_last, cfg.data.cache) == ("true", "off")
    assert config.Config().train.channels_last == "auto"


# each key's value out of range is refused by name before anything runs: past its range the loop would quietly
# do something else (an unknown data.sampler trains on shuffled batches, a negative loss weight turns the term off,
# an unknown train.threads keeps the thread count fixed)
@pytest.mark.parametrize("item, expected", [
    ("data.sampler=balanced", "one of random, pk"),
    ("data.pk_classes=-1", "0 (train.batch_size // data.pk_images) or more classes per batch"),
    ("data.pk_images=0", "1 or more images per class"),
    ("train.threads=sometimes", "auto or fixed"),
    ("loss.center=-0.1", "0 (off) or a positive weight"),
    ("loss.center_alpha=0", "an update rate in (0, 1]"),
    ("loss.pairwise_confusion=-1", "0 (off) or a positive weight"),
    ("method.bilinear_dim=-1", "0 (no reduction) or a number of channels"),
    ("method.isqrt_dim=-1", "0 (no reduction) or a number of channels"),
    ("method.isqrt_iterations=21", "an integer between 1 and 20"),
    ("method.attention_maps=0", "1 or more"),
    ("method.drop_threshold=[0.5,0.2]", "a range [low, high] in [0, 1]"),
    ("method.crop_padding=0.5", "a fraction of the side in [0, 0.5)"),
    ("method.test_crop_threshold=1.5", "a fraction of the map's maximum in [0, 1]"),
    ("method.test_crop_padding=-0.1", "a fraction of the side in [0, 0.5)"),
    ("method.center_weight=-1", "0 or more"),
    ("method.center_momentum=1.5", "a rate in [0, 1]"),
    ("method.effect_weight=-1", "0 or more"),
    ("method.pmg_width=0", "1 or more channels"),
    ("method.api_hidden=0", "1 or more units"),
    ("method.api_margin=2", "a margin between probabilities in [0, 1]"),
])
def test_a_new_keys_value_out_of_range_is_one_sentence(item, expected):
    key = item.split("=")[0]
    with pytest.raises(UserError, match=re.escape(f"config key '{key}' must be {expected}, got")):
        config.load(None, [item])
