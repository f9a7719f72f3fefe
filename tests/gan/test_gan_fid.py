"""Frechet distances: the closed form, the feature pipeline and the FID guard."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from fgvc.errors import UserError
from fgvc.gan import (
    PenultimateFeatures,
    classifier_frechet_distance,
    extract_features,
    frechet_distance,
    frechet_over_checkpoints,
    inception_fid,
    load_generator,
    sample,
)


def _random_rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_frechet_distance_of_commuting_gaussians_matches_the_closed_form():
    q = _random_rotation(4, 0)
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 0.5, 0.5, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    # same eigenvectors: Tr (S1 S2)^(1/2) = sum sqrt(a_i b_i)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_general_gaussians_matches_the_symmetric_form():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2), computed here with eigendecompositions only
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-7)


def test_one_dimensional_case_is_mean_gap_squared_plus_std_gap_squared():
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(2.0**2 + (2.0 - 3.0) ** 2)


class MeanColour(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_classifier_frechet_distance_estimates_the_distance_of_the_feature_gaussians():
    g = torch.Generator().manual_seed(0)
    n = 4000
    mu_a, mu_b, sd_a, sd_b = torch.tensor([0.3, 0.5, 0.5]), torch.tensor([0.5, 0.5, 0.4]), 0.05, 0.1
    # flat-colour images: the mean-colour feature of each is exactly its colour
    real = (mu_a + sd_a * torch.randn(n, 3, generator=g))[:, :, None, None].expand(n, 3, 4, 4)
    fake = (mu_b + sd_b * torch.randn(n, 3, generator=g))[:, :, None, None].expand(n, 3, 4, 4)
    expected = float(((mu_a - mu_b) ** 2).sum()) + 3 * (sd_a - sd_b) ** 2
    assert classifier_frechet_distance(MeanColour(), real, fake, batch_size=512) == pytest.approx(expected, rel=0.05)
    assert classifier_frechet_distance(MeanColour(), real, real) == pytest.approx(0.0, abs=1e-9)


def test_penultimate_features_are_the_input_of_the_last_linear_layer():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU())
    model = nn.Sequential(body, nn.Linear(5, 3))
    x = torch.rand(2, 3, 2, 2)
    assert torch.equal(PenultimateFeatures(model)(x), body(x))


def test_true_fid_without_its_packages_or_weights_is_a_user_error(monkeypatch, tmp_path):
    # imports fail as if not installed (its submodules too: other tests may have imported them already)
    names = ["torchmetrics", "torchmetrics.image", "torchmetrics.image.fid"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UserError, match="torchmetrics"):
        inception_fid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    pytest.importorskip("torchmetrics.image.fid")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match="Inception weights"):
        inception_fid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))


def test_frechet_over_checkpoints_scores_every_kept_checkpoint_against_the_real_images(tiny_run, blobs):
    real = torch.stack([x for x, _ in blobs.items])
    scores = frechet_over_checkpoints(tiny_run, MeanColour(), real, per_class=16, seed=5)
    assert [it for it, _ in scores] == [2, 4]
    # the latest checkpoint's number is the plain distance of that generator's samples
    g = load_generator(tiny_run)
    expected = classifier_frechet_distance(MeanColour(), real, sample(g, range(3), 16, seed=5))
    assert scores[-1][1] == pytest.approx(expected, rel=1e-9)
    assert scores[0][1] != pytest.approx(scores[1][1])


def test_extracting_features_leaves_an_eval_mode_classifier_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 2)).eval()
    stats = model[1].running_mean.clone()
    extract_features(PenultimateFeatures(model), torch.rand(8, 3, 2, 2))
    assert not model.training
    model(torch.rand(8, 3, 2, 2) + 5)  # would move the BN statistics in train mode
    assert torch.equal(model[1].running_mean, stats)
