"""Fixtures for tests/reliability: private copies of the tiny generated dataset that a test may break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def birds(tiny_synthbirds_root, tmp_path) -> Path:
    """A private copy of the tiny synthbirds dataset (4 classes x 16 images, 32 px, CUB layout)."""
    return Path(shutil.copytree(tiny_synthbirds_root, tmp_path / "birds"))
