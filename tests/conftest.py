"""Shared fixtures: generated synthbirds datasets, made once per test run."""

import os
import shutil
from pathlib import Path

import pytest

from fgvc.data import synthetic

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each
    import torch

    torch.set_num_threads(1)

DATA_SIZE = 48  # px of the small datasets the data and reliability tests read or break


@pytest.fixture(scope="session")
def synthbirds_root(tmp_path_factory):
    """8 classes x 80 images at 64 px, CUB layout (half train, half test): the demo's dataset."""
    root = tmp_path_factory.mktemp("synthbirds")
    synthetic.generate(root, classes=8, per_class=80, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_synthbirds_root(tmp_path_factory):
    """4 classes x 16 images at 32 px: for runs that only need to work, not to learn."""
    root = tmp_path_factory.mktemp("tinybirds")
    synthetic.generate(root, classes=4, per_class=16, size=32, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_synthbirds_root, tmp_path_factory):
    """One finished 1-epoch resnet18 run on tiny synthbirds, shared by tests that only read a run."""
    from fgvc import config
    from fgvc.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = config.load(None, ["model.name=resnet18", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
                             "train.batch_size=16", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                             f"out={out}"])
    return train(cfg, progress=False)


# Small datasets in the CUB and Stanford Dogs layouts; tests that break files take a *_copy.
@pytest.fixture(scope="session")
def cub_root(tmp_path_factory) -> Path:
    """Read-only synthbirds in the CUB layout: 4 classes x 10 images, half of each class test."""
    return synthetic.generate(tmp_path_factory.mktemp("synth") / "cub", classes=4, per_class=10, size=DATA_SIZE, seed=0)


@pytest.fixture(scope="session")
def dogs_root(tmp_path_factory) -> Path:
    """Read-only synthbirds in the Stanford Dogs layout: 3 classes x 8 images."""
    return synthetic.generate(tmp_path_factory.mktemp("synth") / "dogs", classes=3, per_class=8, size=DATA_SIZE,
                              seed=0, layout="dogs")


@pytest.fixture
def cub_copy(cub_root, tmp_path) -> Path:
    """A private copy of ``cub_root`` that a test may break."""
    return Path(shutil.copytree(cub_root, tmp_path / "cub"))


@pytest.fixture
def dogs_copy(dogs_root, tmp_path) -> Path:
    return Path(shutil.copytree(dogs_root, tmp_path / "dogs"))
