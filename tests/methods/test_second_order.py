"""Bilinear pooling and iSQRT-COV against their closed forms: einsum, eigendecomposition, gradcheck."""

import pytest
import torch

from fgvc.errors import UserError
from fgvc.methods import build_method
from fgvc.methods.base import backbone_features
from fgvc.methods.bilinear import bilinear_pool, signed_sqrt_l2
from fgvc.methods.isqrt_cov import covariance, newton_schulz_sqrt, triu_index, upper_triangle
from fgvc.models import apply_trainable, create_model


def spd(b=2, d=6, low=0.5, high=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(b, d, d, generator=g, dtype=torch.float64))
    lam = low + (high - low) * torch.rand(b, d, generator=g, dtype=torch.float64)
    return q @ torch.diag_embed(lam) @ q.transpose(1, 2)


def eigh_sqrt(a):
    lam, q = torch.linalg.eigh(a)
    return q @ torch.diag_embed(lam.clamp_min(0).sqrt()) @ q.transpose(1, 2)


def test_bilinear_pool_is_the_average_outer_product():
    x = torch.randn(3, 5, 4, 6)
    expected = torch.einsum("bchw,bdhw->bcd", x, x) / (4 * 6)
    assert torch.allclose(bilinear_pool(x), expected, atol=1e-6)


def test_signed_sqrt_l2_has_unit_norm_and_keeps_signs():
    v = torch.tensor([[4.0, -9.0, 0.0]])
    out = signed_sqrt_l2(v, eps=0.0)
    assert torch.allclose(out, torch.tensor([[2.0, -3.0, 0.0]]) / 13 ** 0.5)


def test_newton_schulz_square_root_squares_back_and_matches_eigh():
    a = spd()
    y = newton_schulz_sqrt(a, iterations=30)
    assert torch.allclose(y @ y, a, atol=1e-10)
    assert torch.allclose(y, eigh_sqrt(a), atol=1e-10)


def test_five_iterations_approximate_the_square_root_of_a_well_conditioned_matrix():
    a = spd(low=0.8, high=1.2) * 37.0  # post-compensation makes the scale irrelevant
    y = newton_schulz_sqrt(a, iterations=5)
    assert torch.allclose(y, eigh_sqrt(a), rtol=1e-3, atol=1e-3 * 37 ** 0.5)


def test_covariance_is_x_ihat_xt():
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    m = 15
    ihat = (torch.eye(m, dtype=torch.float64) - torch.ones(m, m, dtype=torch.float64) / m) / m
    flat = x.reshape(2, 4, m)
    assert torch.allclose(covariance(x), flat @ ihat @ flat.transpose(1, 2))


def test_gradients_of_the_square_root_and_covariance_are_right():
    a = spd(b=1, d=4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: newton_schulz_sqrt(m, 5), (a,))
    x = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: newton_schulz_sqrt(covariance(t) + 0.1 * torch.eye(3), 3), (x,))


@pytest.mark.parametrize("size, side", [(224, 7), (227, 8)])
def test_the_stride_32_map_at_224_px_bounds_the_covariance_rank_as_the_docs_say(size, side):
    backbone = create_model("resnet18", 3)
    with torch.no_grad():
        fmap = backbone_features(backbone.net.eval(), backbone.family, torch.rand(1, 3, size, size))
    assert fmap.shape[-2:] == (side, side)
    # 16 channels over 3 x 3 = 9 locations: the centred covariance has rank at most 9 - 1
    sigma = covariance(torch.randn(1, 16, 3, 3, dtype=torch.float64))
    assert torch.linalg.matrix_rank(sigma[0]) == 8


def test_upper_triangle_reads_the_diagonal_and_above_row_by_row():
    m = torch.arange(9.0).reshape(1, 3, 3)
    assert upper_triangle(m, triu_index(3)).tolist() == [[0.0, 1.0, 2.0, 4.0, 5.0, 8.0]]


@pytest.mark.parametrize("name, settings, features", [("bilinear", {"bilinear_dim": 0}, 512 * 512),
                                                      ("bilinear", {"bilinear_dim": 8}, 64),
                                                      ("isqrt_cov", {"isqrt_dim": 8, "isqrt_iterations": 5}, 36)])
def test_second_order_heads_replace_the_resnet_head(name, settings, features):
    backbone = create_model("resnet18", 3)
    layer1 = backbone.net.layer1[0].conv1.weight.clone()
    model = build_method(name, backbone, 3, 0.0, **settings)
    assert model.head.in_features == features and model.head.out_features == 3
    assert torch.equal(model.net.layer1[0].conv1.weight, layer1)  # the backbone's weights are kept
    assert model.feature_module is model.net.layer4
    out = model.eval()(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_trainable_head_names_train_the_whole_method_head():
    model = build_method("isqrt_cov", create_model("resnet18", 3), 3, 0.0, isqrt_dim=8)
    apply_trainable(model, "fc")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("net.fc.") for n in trainable)
    assert "net.fc.reduce.0.weight" in trainable and "net.fc.fc.weight" in trainable


def test_mobilenet_v2_head_reads_its_1280_channel_map():
    model = build_method("bilinear", create_model("tf_mobilenetv2_100", 4), 4, 0.0, bilinear_dim=16)
    assert model.head_slot == "classifier" and model.head.in_features == 256
    apply_trainable(model, "head+blocks:1")
    assert model.net.classifier.reduce[0].weight.requires_grad and not model.net.blocks[0][0].conv_dw.weight.requires_grad
    assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 4)


@pytest.mark.parametrize("name", ["test_vit", "vit_b_16", "test_vit_relpos", "test_coatnet"])
def test_a_backbone_without_a_spatial_map_is_refused(name):
    # test_vit_relpos fails timm's input-size assert, test_coatnet a position table's shape: no usable map either
    with pytest.raises(UserError, match="no spatial feature map"):
        build_method("bilinear", create_model(name, 3, image_size=32 if name == "test_vit" else 224), 3)


@pytest.mark.parametrize("error", [TypeError("a bug"), KeyError("a bug"), torch.OutOfMemoryError("out of memory")])
def test_a_bug_in_a_backbones_features_is_not_called_a_missing_map(error, monkeypatch):
    backbone = create_model("test_resnet", 3)

    def broken(x):
        raise error

    monkeypatch.setattr(backbone.net, "forward_features", broken)
    with pytest.raises(type(error), match="a bug|out of memory"):
        build_method("bilinear", backbone, 3)
