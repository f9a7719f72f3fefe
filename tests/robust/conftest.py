"""Fixtures for the robustness tests: the toy task and models live in robust_toys.py."""

import pytest
import torch
from robust_toys import blobs, tiny_cnn, train_blobs


@pytest.fixture(scope="session")
def blob_test_set():
    return blobs(512, seed=2)


@pytest.fixture(scope="session")
def trained_cnn():
    """A standard (not adversarially) trained tiny_cnn; tests must not modify it."""
    return train_blobs()


@pytest.fixture
def random_cnn():
    torch.manual_seed(0)
    return tiny_cnn().eval()
