"""Fixtures for tests/clip: tiny random CLIP models, their tokenizer, a generated shapes dataset."""

from __future__ import annotations

import json

import open_clip
import pytest
from tinyclip import TINY_CFG, TINY_NAME, ShapesDataset, make_tiny_clip


@pytest.fixture
def tiny_clip():
    return make_tiny_clip()


@pytest.fixture(scope="session")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-32")  # SimpleTokenizer: its BPE vocabulary ships with open_clip


@pytest.fixture(scope="session")
def tiny_model_name(tmp_path_factory):
    """The tiny architecture registered with open_clip under TINY_NAME, as a user's own config would be."""
    folder = tmp_path_factory.mktemp("model_configs")
    (folder / f"{TINY_NAME}.json").write_text(json.dumps(TINY_CFG))
    if open_clip.get_model_config(TINY_NAME) is None:
        open_clip.add_model_config(folder)
    return TINY_NAME


@pytest.fixture
def shapes():
    """``shapes(per_class, seed, transform=None)`` -> ShapesDataset."""
    return ShapesDataset


@pytest.fixture
def shapes_registered(monkeypatch):
    """Registers dataset ``shapes`` in fgvc.data.DATASETS: split sizes train 16, val 4, test 8 per class."""
    import fgvc.data

    sizes = {"train": (16, 1), "val": (4, 2), "test": (8, 3)}

    def load(root, split, transform=None, val_fraction=0.1, seed=0):
        per_class, split_seed = sizes[split]
        return ShapesDataset(per_class, split_seed, transform)

    monkeypatch.setitem(fgvc.data.DATASETS, "shapes", load)
    return "shapes"
