"""CAM / Grad-CAM / Grad-CAM++ on feature maps that are not (B, C, h, w): channels-last stages
(swin, MambaOut) and transformer tokens of timm models outside the ViT family (EVA).

pytorch-grad-cam, given the reshape to (B, C, h, w), is the reference: fgvc must agree to 1e-4.
"""

import copy

import pytest
import torch
from torch import nn

from fgvc.errors import UserError
from fgvc.explain import cam, gradcam, normalize_maps
from fgvc.models import create_model
from fgvc.models.factory import Classifier, _timm_model


def nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2)


def reference(model, layer, x, targets, method, reshape=None):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ref_cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    model = copy.deepcopy(model)  # the reference leaves hooks and state behind
    with ref_cls(model, [model.get_submodule(layer)], reshape_transform=reshape) as ref:
        r = torch.from_numpy(ref(x, [ClassifierOutputTarget(t) for t in targets]))
    return normalize_maps(r, x.shape[-2:])  # it min-max normalises before resizing; renormalise to compare


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    # the last stage is (B, 4, 4, 128) at 64 px; read as (B, C, h, w) it had 4 "channels"
    return _timm_model("swin_tiny_patch4_window7_224", 5, False, 0.0, 64, embed_dim=16, depths=(1, 1, 2, 1),
                       num_heads=(1, 1, 2, 2), window_size=4, patch_size=2).eval()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_swin_gradcam_matches_pytorch_grad_cam_with_channels_last_reshape(swin, method):
    assert swin.feature_path == "layers.3"
    x = torch.rand(3, 3, 64, 64)
    targets = [1, 4, 0]
    ours = gradcam(swin, x, torch.tensor(targets), method=method)
    r = reference(swin, "net.layers.3", x, targets, method, nhwc_to_nchw)
    assert ours.amax(dim=(1, 2)).eq(1).all()  # real maps, not two zero maps agreeing
    assert torch.allclose(ours, r, atol=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_mambaout_channels_last_stage_matches_pytorch_grad_cam(method):
    torch.manual_seed(0)
    model = create_model("test_mambaout", 5, image_size=96).eval()
    acts = []
    handle = model.feature_module.register_forward_hook(lambda m, i, o: acts.append(o))
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        model(x)
    handle.remove()
    assert acts[0].shape[1] == acts[0].shape[2] != acts[0].shape[3]  # (B, h, w, C)
    ours = gradcam(model, x, 3, method=method)
    r = reference(model, "net." + model.feature_path, x, [3, 3], method, nhwc_to_nchw)
    assert ours.amax(dim=(1, 2)).eq(1).all()
    assert torch.allclose(ours, r, atol=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_convnext_stage_stays_channels_first(method):
    torch.manual_seed(0)
    model = create_model("test_convnext", 5, image_size=64).eval()
    x = torch.rand(2, 3, 64, 64)
    ours = gradcam(model, x, [0, 2], method=method)
    assert torch.allclose(ours, reference(model, "net." + model.feature_path, x, [0, 2], method), atol=1e-4)


def test_eva_tokens_match_pytorch_grad_cam_with_token_reshape():
    torch.manual_seed(0)
    model = _timm_model("eva02_tiny_patch14_224", 5, False, 0.0, 56, embed_dim=32, depth=2, num_heads=2).eval()
    assert model.family == "timm" and model.feature_path == "blocks.1"  # tokens (B, 1 + 4 * 4, 32)

    def tokens(t):  # drop the class token, tokens -> (B, D, 4, 4)
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    x = torch.rand(2, 3, 56, 56)
    ours = gradcam(model, x, 1)
    assert ours.amax(dim=(1, 2)).eq(1).all()
    assert torch.allclose(ours, reference(model, "net.blocks.1", x, [1, 1], "gradcam", tokens), atol=1e-4)


def test_token_pooled_last_block_is_refused_not_an_empty_map():
    torch.manual_seed(0)
    model = _timm_model("eva02_tiny_patch14_224", 5, False, 0.0, 56, embed_dim=32, depth=2, num_heads=2,
                        global_pool="token").eval()
    with pytest.raises(UserError, match=r"only through the class token.*blocks\.1\.norm1"):
        gradcam(model, torch.rand(1, 3, 56, 56))
    assert gradcam(model, torch.rand(1, 3, 56, 56), layer="blocks.1.norm1").amax() == 1


def test_cam_on_swin_is_refused_in_one_sentence_about_its_head(swin):
    with pytest.raises(UserError) as e:
        cam(swin, torch.rand(1, 3, 64, 64))
    message = str(e.value)
    assert "Grad-CAM" in message and "\n" not in message
    assert "channels" not in message  # the (B, h, w, C) map was read with its 128 channels, not 4


class _Stage(nn.Module):
    """A strided conv whose output is channels-last when ``nhwc``."""

    def __init__(self, conv, nhwc):
        super().__init__()
        self.conv, self.nhwc = conv, nhwc

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y.permute(0, 2, 3, 1) if self.nhwc else y


class _GapNet(nn.Module):
    def __init__(self, stage, fc, nhwc):
        super().__init__()
        self.stage, self.fc, self.nhwc = stage, fc, nhwc
        if nhwc:
            self.output_fmt = "NHWC"  # as timm's channels-last models declare

    def forward(self, x):
        return self.fc(self.stage(x).mean(dim=(1, 2) if self.nhwc else (2, 3)))


def _twins(stride):
    """The same GAP + linear network twice: channels-first and channels-last features."""
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(3, 8, stride, stride), nn.Linear(8, 4)
    nchw = Classifier(_GapNet(_Stage(conv, False), fc, False), "nchw", "timm", "fc", "stage")
    nhwc = Classifier(_GapNet(_Stage(conv, True), fc, True), "nhwc", "timm", "fc", "stage")
    return nchw.eval(), nhwc.eval()


@pytest.mark.parametrize("stride", [4, 8])  # 16x16x8 maps (shape decides) and 8x8x8 (output_fmt decides)
@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcam++"])
def test_channels_last_maps_equal_their_channels_first_twin(stride, method):
    nchw, nhwc = _twins(stride)
    x = torch.rand(3, 3, 64, 64)
    explain = (lambda m: cam(m, x, [0, 1, 3])) if method == "cam" else (
        lambda m: gradcam(m, x, [0, 1, 3], method=method))
    want = explain(nchw)
    assert want.amax(dim=(1, 2)).eq(1).all()
    assert torch.allclose(explain(nhwc), want, atol=1e-5)


def test_a_map_of_neither_layout_is_refused():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.Flatten(2), nn.Unflatten(2, (8, 32)), nn.Flatten(1), nn.Linear(1024, 3))
    model = Classifier(net, "odd", "timm", "4", "2")
    with pytest.raises(UserError, match=r"layer '2' gives a map of shape \(1, 4, 8, 32\).*pick another layer"):
        gradcam(model, torch.rand(1, 3, 64, 64))


def test_hiera_last_stage_matches_pytorch_grad_cam_and_unrolled_stages_are_refused():
    torch.manual_seed(0)
    model = _timm_model("hiera_tiny_224", 4, False, 0.0, 224, embed_dim=16, num_heads=1, stages=(1, 1, 1, 1)).eval()
    nn.init.normal_(model.net.head.fc.weight)  # timm starts the head at zero: every map would be zero
    assert model.feature_path == "blocks.3"  # (B, 7 * 7, 128) tokens, raster order in the last stage only

    def tokens(t):
        return t.reshape(t.shape[0], 7, 7, t.shape[2]).permute(0, 3, 1, 2)

    x = torch.rand(1, 3, 224, 224)
    ours = gradcam(model, x, 1)
    assert ours.amax() == 1
    assert torch.allclose(ours, reference(model, "net.blocks.3", x, [1], "gradcam", tokens), atol=1e-4)
    with pytest.raises(UserError, match=r"mask-unit order.*blocks\.3 or later"):
        gradcam(model, x, 1, layer="blocks.1")
