"""The GAN config is loaded by fgvc.config's public machinery, not a copy of it."""

from dataclasses import dataclass, field

import pytest

import fgvc.gan.config as gan_config
from fgvc import config as config_mod
from fgvc.errors import UserError


@dataclass
class Inner:
    size: int = 8


@dataclass
class Toy:
    inner: Inner = field(default_factory=Inner)
    rate: float = 0.5
    names: list[str] = field(default_factory=lambda: ["a"])


def test_load_dataclass_reads_yaml_then_overrides_with_types_and_hints(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("inner:\n  size: 16\nrate: 0.25\n")
    toy = config_mod.load_dataclass(Toy, path, ["rate=0.75", "names=[x,y]"])
    assert toy == Toy(Inner(16), 0.75, ["x", "y"])
    with pytest.raises(UserError, match=r"unknown toy config key 'inner.sise' \(did you mean inner.size\?\)"):
        config_mod.load_dataclass(Toy, None, ["inner.sise=3"], what="toy config")
    with pytest.raises(UserError, match=r"config key 'inner.size' expects an integer, got 'big'"):
        config_mod.load_dataclass(Toy, None, {"inner": {"size": "big"}})
    checks = {"rate": (lambda v: 0 <= v <= 1, "a fraction in [0, 1]")}
    with pytest.raises(UserError, match=r"toy config key 'rate' must be a fraction in \[0, 1\], got 2.0"):
        config_mod.check_ranges(config_mod.load_dataclass(Toy, None, ["rate=2"]), checks, what="toy config")


def test_the_gan_config_goes_through_it(monkeypatch):
    assert not any(name.startswith("_coerce") for name in vars(gan_config))
    calls = []
    load = config_mod.load_dataclass
    monkeypatch.setattr(gan_config, "load_dataclass", lambda *a, **k: calls.append(a[0]) or load(*a, **k))
    assert gan_config.load_gan_config(None, ["iterations=7"]).iterations == 7
    assert calls == [gan_config.GanConfig]
    assert gan_config.gan_keys() == config_mod.all_keys(gan_config.GanConfig)
