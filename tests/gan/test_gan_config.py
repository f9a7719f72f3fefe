"""The GAN config: YAML and key=value overrides, typed and strict."""

from __future__ import annotations

import pytest

from fgvc.errors import UserError
from fgvc.gan import GanConfig, dump_gan_config, load_gan_config


def test_defaults_are_the_seeds_recipe():
    cfg = GanConfig()
    assert (cfg.iterations, cfg.n_dis, cfg.lr, cfg.betas, cfg.data.image_size, cfg.z_dim) == (
        5000, 5, 2e-4, [0.0, 0.9], 64, 128)


def test_overrides_are_typed_and_a_yaml_dump_reads_back(tmp_path):
    cfg = load_gan_config(overrides=["data.image_size=32", "betas=[0,0.99]", "iterations=10", "flip=false"])
    assert cfg.data.image_size == 32 and cfg.betas == [0.0, 0.99] and cfg.iterations == 10 and cfg.flip is False
    path = tmp_path / "gan.yaml"
    path.write_text(dump_gan_config(cfg))
    assert load_gan_config(path) == cfg
    assert load_gan_config(path, {"ch": "16"}).ch == 16


@pytest.mark.parametrize("override,message", [
    ("n_dsi=3", "did you mean n_dis"),
    ("data.image_size=48", "data.image_size"),
    ("betas=[0.5]", "betas"),
    ("iterations=ten", "expects an integer"),
    ("ema_decay=1", "ema_decay"),
])
def test_bad_keys_and_values_are_user_errors_naming_the_key(override, message):
    with pytest.raises(UserError, match=message):
        load_gan_config(overrides=[override])


def test_resume_refuses_keys_that_cannot_take_effect_and_writes_nothing(tmp_path, capsys, tiny_synthbirds_root):
    from fgvc.cli import main
    from fgvc.gan.config import dump_gan_config, load_gan_config

    run = tmp_path / "gan-run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_gan_config(load_gan_config(None, ["lr=2e-4", f"data.root={tiny_synthbirds_root}"])))
    before = (run / "config.yaml").read_text()
    for key in ("lr=1e-3", "betas=[0.5,0.99]", "seed=3", "ch=32", "data.image_size=32"):
        assert main(["gan", "train", "--resume", str(run), key]) == 2
        err = capsys.readouterr().err
        assert key.split("=")[0] in err and "cannot take effect on resume" in err
    assert (run / "config.yaml").read_text() == before
