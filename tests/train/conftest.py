"""Fixtures of the training tests that run tiny real trainings (test_wiring.py, test_sampler_losses_wiring.py,
test_survivors_loop.py): one torch thread, configs built from the test module's ``BASE`` overrides, and the
first optimizer step of such a run, recorded by the spies of wiring_helpers.py."""

from __future__ import annotations

import pytest
import torch
from wiring_helpers import run_and_spy

from fgvc import config


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread while a module runs: for tiny convolutions more threads only add synchronisation,
    which a busy machine turns into seconds. A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``, so it is in force before the module's runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def make_cfg(request, tiny_synthbirds_root):
    """``make_cfg(*overrides)``: the config of the test module's ``BASE`` overrides on tiny synthbirds
    (4 classes), then ``overrides``."""
    base = request.module.BASE

    def make(*extra):
        return config.load(None, [*base, f"data.root={tiny_synthbirds_root}", *extra])
    return make


@pytest.fixture(scope="module")
def first_step(make_cfg, tmp_path_factory):
    """``first_step(*overrides)``: the spy of a ``make_cfg(*overrides)`` run stopped after its first optimizer
    step (cached per module: tests that read the same run share it)."""
    cache = {}

    def run(*extra):
        if extra not in cache:
            cache[extra] = run_and_spy(make_cfg(*extra), tmp_path_factory.mktemp("step"), stop_after_first_step=True)
        return cache[extra]
    return run
