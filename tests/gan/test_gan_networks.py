"""The SNGAN-projection networks: spectral norm everywhere in D, projection, conditional BN, ranges."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from fgvc.errors import UserError
from fgvc.gan import Discriminator, Generator, sample

SIZES = (32, 64, 128)


def _weighted_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding)]


@pytest.mark.parametrize("size", SIZES)
def test_every_discriminator_layer_is_spectrally_normalised(size):
    torch.manual_seed(0)
    d = Discriminator(n_classes=5, image_size=size, ch=2)
    layers = _weighted_layers(d)
    assert any(isinstance(m, nn.Embedding) for m in layers)  # the projection embedding is included
    for m in layers:
        assert parametrize.is_parametrized(m, "weight"), f"{m} has no parametrization"
        assert type(m.parametrizations.weight[0]).__name__ == "_SpectralNorm", m
    # behaviour, not just presence: after power iterations every weight's top singular value is ~1
    x, y = torch.rand(2, 3, size, size) * 2 - 1, torch.tensor([0, 3])
    for _ in range(30):
        d(x, y)
    d.eval()
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05), f"{m}: sigma {sigma:.3f}"


def test_projection_term_changes_with_the_label():
    torch.manual_seed(0)
    d = Discriminator(n_classes=4, image_size=32, ch=4).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        logits = torch.cat([d(x, torch.tensor([c])) for c in range(4)])
        h = d.features(x)
        w = d.embed.weight
    assert logits.unique().numel() == 4
    # the only label-dependent part is <embed(y), h>: differences equal the embedding differences
    assert torch.allclose(logits[1] - logits[0], (w[1] - w[0]) @ h[0], atol=1e-4)


def test_projection_gradient_reaches_only_the_given_classes_embedding_rows():
    torch.manual_seed(0)
    d = Discriminator(n_classes=5, image_size=32, ch=4).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with parametrize.cached():  # one normalised embedding matrix shared by the forward pass
        w = d.embed.weight
        w.retain_grad()
        d(x, torch.tensor([1, 3, 1])).sum().backward()
    row_norms = w.grad.norm(dim=1)
    assert row_norms[1] > 0 and row_norms[3] > 0
    assert torch.all(row_norms[[0, 2, 4]] == 0)


@pytest.mark.parametrize("size", SIZES)
def test_generator_output_is_in_tanh_range_with_one_image_per_label(size):
    torch.manual_seed(0)
    g = Generator(n_classes=3, image_size=size, ch=2, z_dim=8)
    with torch.no_grad():
        g.conv_out.weight *= 100  # drive the last layer into saturation: still within [-1, 1]
    out = g(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
    assert out.shape == (4, 3, size, size)
    assert out.min() >= -1 and out.max() <= 1 and out.min() < -0.99 and out.max() > 0.99


def test_sample_returns_n_images_per_class_in_unit_range():
    torch.manual_seed(0)
    g = Generator(n_classes=3, image_size=32, ch=4, z_dim=8)
    images = sample(g, [2, 0], n=3, seed=5, batch_size=4)
    assert images.shape == (6, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.allclose(images, sample(g, [2, 0], n=3, seed=5, batch_size=64), atol=1e-5)  # batching is no factor
    assert not torch.equal(images, sample(g, [2, 0], n=3, seed=6))


def test_conditional_batch_norm_starts_class_neutral_and_conditions_per_class():
    torch.manual_seed(0)
    g = Generator(n_classes=3, image_size=32, ch=4, z_dim=8).eval()
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(g(z, torch.tensor([0, 0])), g(z, torch.tensor([1, 1])))  # gamma 1, beta 0
        g.blocks[0].b1.gamma.weight[1] *= 3.0
        assert not torch.allclose(g(z, torch.tensor([0, 0])), g(z, torch.tensor([1, 1])))
        assert torch.equal(g(z, torch.tensor([0, 0])), g(z, torch.tensor([2, 2])))


@pytest.mark.parametrize("size,final", [(32, 2), (64, 2), (128, 4)])
def test_discriminator_ends_where_the_reference_does(size, final):
    # reference: 64 px downsamples in every block; 128 px keeps its extra last block at 4x4
    d = Discriminator(n_classes=2, image_size=size, ch=1)
    assert d.blocks(torch.zeros(1, 3, size, size)).shape[-1] == final


def test_unsupported_image_size_is_a_user_error():
    with pytest.raises(UserError, match="image size 48"):
        Generator(n_classes=2, image_size=48)
