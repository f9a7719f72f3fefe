"""Small generated datasets shared by the data tests (generated once per session, copied to modify)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from data_helpers import SIZE

from fgvc.data import synthetic


@pytest.fixture(scope="session")
def cub_root(tmp_path_factory) -> Path:
    """Read-only synthbirds in the CUB layout: 4 classes x 10 images, half of each class test."""
    return synthetic.generate(tmp_path_factory.mktemp("synth") / "cub", classes=4, per_class=10, size=SIZE, seed=0)


@pytest.fixture(scope="session")
def dogs_root(tmp_path_factory) -> Path:
    """Read-only synthbirds in the Stanford Dogs layout: 3 classes x 8 images."""
    return synthetic.generate(tmp_path_factory.mktemp("synth") / "dogs", classes=3, per_class=8, size=SIZE,
                              seed=0, layout="dogs")


@pytest.fixture
def cub_copy(cub_root, tmp_path) -> Path:
    """A private copy of ``cub_root`` that a test may break."""
    return Path(shutil.copytree(cub_root, tmp_path / "cub"))


@pytest.fixture
def dogs_copy(dogs_root, tmp_path) -> Path:
    return Path(shutil.copytree(dogs_root, tmp_path / "dogs"))
