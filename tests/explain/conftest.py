"""Fixtures for the explain tests: a tiny CNN trained in seconds on coloured squares with exact boxes."""

from __future__ import annotations

import pytest
import torch
from explain_helpers import fit, make_squares, tiny_classifier


@pytest.fixture(scope="session")
def squares_test():
    return make_squares(64, seed=1)


@pytest.fixture(scope="session")
def trained_tiny(squares_test):
    x, y, _ = make_squares(256, seed=0)
    model = fit(tiny_classifier(), x, y, epochs=8)
    xt, yt, _ = squares_test
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.9, f"the tiny CNN did not learn the squares ({acc:.2f}); the localisation tests need it"
    return model
