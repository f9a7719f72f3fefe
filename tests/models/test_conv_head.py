"""timm models whose classifier is a 1x1 convolution on pooled features (ResNetV2 / BiT): the head is the
Linear it computes, timm's checkpoints load, CAM's identity holds, and the head trains."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from fgvc.explain import cam
from fgvc.models import create_model
from fgvc.models.factory import ConvHeadAsLinear
from fgvc.models.weights import load_weights_file


@pytest.fixture(scope="module")
def bit():
    torch.manual_seed(0)
    return create_model("resnetv2_18", 5, image_size=32).eval()


def test_the_conv_head_is_a_linear_that_computes_what_timms_head_does(bit):
    assert isinstance(bit.head, ConvHeadAsLinear) and bit.head_path == "head.fc" and bit.head.weight.shape == (5, 512)
    reference = timm.create_model("resnetv2_18", num_classes=5).eval()
    reference.load_state_dict(bit.net.state_dict())  # timm's own 1x1 convolution, the same weights
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(bit(x), reference(bit.normalize(x)), atol=1e-5)
    assert bit.net.state_dict()["head.fc.weight"].shape == (5, 512, 1, 1)  # timm's layout in checkpoints


def test_a_timm_resnetv2_file_loads_and_a_new_head_starts_at_zero(tmp_path):
    torch.manual_seed(1)
    src = timm.create_model("resnetv2_18", num_classes=1000)
    path = tmp_path / "bit.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    same = create_model("resnetv2_18", 1000, image_size=32)
    assert load_weights_file(same, path)["head"] == "loaded"
    assert torch.equal(same.head.weight, src.head.fc.weight.flatten(1))
    fresh = create_model("resnetv2_18", 4, image_size=32)
    assert load_weights_file(fresh, path)["head"] == "replaced" and not fresh.head.weight.any()
    assert torch.equal(fresh.net.stem.conv.weight, src.stem.conv.weight)


def test_cam_holds_its_identity_on_the_normalised_map(bit):
    maps = cam(bit, torch.rand(2, 3, 32, 32))  # raises unless mean(CAM) + bias == logit (the map is `norm`'s)
    assert maps.shape == (2, 32, 32) and bit.feature_path == "norm"


def test_the_head_trains(bit):
    model = create_model("resnetv2_18", 5, image_size=32)
    before = model.head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model.train()(torch.rand(4, 3, 32, 32)), torch.arange(4)).backward()
    opt.step()
    assert not torch.equal(model.head.weight, before)
