"""Fixtures for the GAN tests: a coloured-blob dataset and one tiny finished run, shared."""

from __future__ import annotations

import pytest
from gan_helpers import BlobDataset, tiny_config

from fgvc.gan import train_gan


@pytest.fixture(scope="session")
def blobs() -> BlobDataset:
    return BlobDataset(per_class=16, size=32, seed=0)


@pytest.fixture(scope="session")
def tiny_run(blobs, tmp_path_factory):
    """A 4-iteration run at 32 px (checkpoints at 2 and 4): enough to load, sample and resume."""
    return train_gan(tiny_config(tmp_path_factory.mktemp("gan")), blobs, progress=False)
