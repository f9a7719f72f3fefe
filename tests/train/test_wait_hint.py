"""The first epoch's share spent waiting for batches reaches the user as a hint about data.cache on a CPU."""

import time

import pytest

from fgvc.cli import main
from fgvc.data import base
from fgvc.data.cache import WAIT_HINT_SHARE, CachedDataset, wait_hint


def test_hint_starts_at_its_share_and_only_for_an_uncached_one_process_cpu_run():
    assert wait_hint("off", "cpu", WAIT_HINT_SHARE * 10, 10) is not None
    assert wait_hint("off", "cpu", WAIT_HINT_SHARE * 10 - 1e-6, 10) is None
    assert "waited 30% of its 10 s" in wait_hint("off", "cpu", 3, 10)
    assert wait_hint("auto", "cpu", 9, 10) is None and wait_hint("on", "cpu", 9, 10) is None
    assert wait_hint("off", "cuda", 9, 10) is None
    assert wait_hint("off", "cpu", 9, 10, processes=2) is None  # each batch also waits for the slowest process
    assert wait_hint("off", "cpu", 0, 0) is None


def _slowed(monkeypatch, owner, name):
    original = getattr(owner, name)

    def slow(*a, **k):  # decoding that dominates the epoch, as on 2 cores with a small model
        time.sleep(0.02)
        return original(*a, **k)

    monkeypatch.setattr(owner, name, slow)


@pytest.mark.parametrize("cache", ["off", "on"])
def test_slow_batches_print_the_hint_once_unless_cached(cache, tiny_synthbirds_root, tmp_path, monkeypatch, capfd):
    _slowed(monkeypatch, base, "read_rgb")  # the uncached loader's reads (the cache builds with its own)
    _slowed(monkeypatch, CachedDataset, "__getitem__")  # the cached loader waits as long: only the mode differs
    args = ["train", "model.name=test_resnet", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
            "data.image_size=32", "train.epochs=2", "data.num_workers=0", f"data.cache={cache}",
            f"data.cache_dir={tmp_path / 'cache'}", "train.accelerator=cpu", f"out={tmp_path / 'runs'}", "--quiet"]
    assert main(args) == 0
    printed = capfd.readouterr().out
    assert printed.count("data.cache=auto decodes each image once") == (1 if cache == "off" else 0)
