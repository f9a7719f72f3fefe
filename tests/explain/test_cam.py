import copy

import pytest
import torch
from explain_helpers import hook_count, tiny_classifier
from torch import nn

from fgvc.errors import UserError
from fgvc.explain import METHODS, cam, explain, gradcam, normalize_maps
from fgvc.models import create_model
from fgvc.models.factory import Classifier

ALL = [m for m in METHODS if m != "attention"]  # attention: WS-DAN / CAL models only (tests/methods)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return create_model("test_resnet", 5, image_size=128).eval()


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model("test_vit", 5, image_size=64).eval()


def test_gradcam_at_last_conv_equals_relu_cam_for_gap_linear_resnet18():
    # d logit_c / d A_k(i, j) = w_ck / (h w) for GAP + linear, so Grad-CAM = ReLU(CAM) / (h w)
    torch.manual_seed(0)
    model = create_model("resnet18", 6, image_size=64).eval()
    x = torch.rand(4, 3, 64, 64)
    for target in (None, 3, torch.tensor([0, 5, 2, 2])):
        g = gradcam(model, x, target)
        c = cam(model, x, target, relu=True)
        assert torch.allclose(g, c, atol=1e-4)
        assert g.amax(dim=(1, 2)).eq(1).all()  # non-trivial maps, not two zero maps agreeing


def test_cam_follows_the_head_weights(trained_tiny, squares_test):
    # CAM is w_c . A: negating the class weights turns the min-max map upside down
    x = squares_test[0][:6]
    flipped = copy.deepcopy(trained_tiny)
    flipped.head.weight.data.neg_()
    flipped.head.bias.data.neg_()
    t = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(cam(flipped, x, t), 1 - cam(trained_tiny, x, t), atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_matches_pytorch_grad_cam_on_a_cnn(resnet, method):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ref_cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    x = torch.rand(3, 3, 128, 128)
    targets = [1, 4, 0]
    model = copy.deepcopy(resnet)  # the reference leaves hooks and state behind; keep it off the shared model
    with ref_cls(model, [model.feature_module]) as ref:
        r = torch.from_numpy(ref(x, [ClassifierOutputTarget(t) for t in targets]))
    # it min-max normalises before resizing; renormalising makes the two pipelines comparable
    r = normalize_maps(r, r.shape[-2:])
    assert torch.allclose(gradcam(resnet, x, torch.tensor(targets), method=method), r, atol=1e-4)


def test_vit_gradcam_matches_pytorch_grad_cam_with_token_reshape(vit):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def reshape(t):  # drop the class token, tokens -> (B, D, 4, 4)
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    x = torch.rand(2, 3, 64, 64)
    model = copy.deepcopy(vit)
    with GradCAM(model, [model.net.blocks[-1].norm1], reshape_transform=reshape) as ref:
        r = normalize_maps(torch.from_numpy(ref(x, [ClassifierOutputTarget(2)] * 2)), (64, 64))
    assert torch.allclose(gradcam(vit, x, 2), r, atol=1e-4)


@pytest.mark.parametrize("method", ALL)
def test_maps_are_in_unit_range_at_input_size(resnet, method):
    x = torch.rand(3, 3, 96, 128)
    maps = explain(resnet, x, method)
    assert maps.shape == (3, 96, 128) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3))  # per-image min-max, not per-batch


@pytest.mark.parametrize("method", ALL)
def test_mixed_targets_give_each_sample_its_own_class_map(trained_tiny, squares_test, method):
    x = squares_test[0][:4]
    targets = torch.tensor([3, 0, 2, 1])
    batch = explain(trained_tiny, x, method, targets)
    for i, t in enumerate(targets.tolist()):
        single = explain(trained_tiny, x[i:i + 1], method, t)
        assert torch.allclose(batch[i], single[0], atol=1e-5)
    # the target matters: another class gives another map for the same image
    other = explain(trained_tiny, x[:1], method, 1)
    assert not torch.allclose(batch[0], other[0], atol=1e-2)


@pytest.mark.parametrize("method", ALL)
def test_default_target_is_the_predicted_class(trained_tiny, squares_test, method):
    x = squares_test[0][:5]
    with torch.no_grad():
        pred = trained_tiny(x).argmax(1)
    assert torch.allclose(explain(trained_tiny, x, method), explain(trained_tiny, x, method, pred))


@pytest.mark.parametrize("method", ALL)
def test_hooks_are_removed_after_success_and_after_errors(resnet, method):
    before = hook_count(resnet)
    explain(resnet, torch.rand(2, 3, 64, 64), method)
    assert hook_count(resnet) == before
    with pytest.raises(RuntimeError):  # a 2-channel image fails inside the forward pass
        explain(resnet, torch.rand(2, 2, 64, 64), method)
    assert hook_count(resnet) == before
    with pytest.raises(UserError, match="out of range"):  # fails after the forward pass
        explain(resnet, torch.rand(2, 3, 64, 64), method, 7)
    assert hook_count(resnet) == before


@pytest.mark.parametrize("method", ALL)
def test_modes_requires_grad_and_grads_are_restored(method):
    model = tiny_classifier(seed=3)
    model.train()
    model.net.features[0].eval()  # a caller's mixed state must come back as it was
    for p in model.net.features[0].parameters():
        p.requires_grad_(False)
    model(torch.rand(2, 3, 64, 64)).sum().backward()  # the caller's own gradients, to keep
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    running_mean = model.net.features[1].running_mean.clone()
    x = torch.rand(3, 3, 64, 64)
    first = explain(model, x, method)
    assert torch.equal(first, explain(model, x, method))  # eval inside: dropout off, no BN batch stats
    assert torch.equal(running_mean, model.net.features[1].running_mean)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None) and (p.grad is None or torch.equal(p.grad, grads[n])), n


@pytest.mark.parametrize("method", ALL)
def test_works_under_no_grad_inference_mode_and_frozen_weights(resnet, method):
    x = torch.rand(2, 3, 64, 64)
    plain = explain(resnet, x, method)
    with torch.no_grad():
        assert torch.allclose(explain(resnet, x, method), plain)
    with torch.inference_mode():
        xi = x.clone()
        assert torch.allclose(explain(resnet, xi, method), plain)
    frozen = copy.deepcopy(resnet).requires_grad_(False)
    assert torch.allclose(explain(frozen, x, method), plain)


def test_vit_gradcam_gives_unit_range_maps_and_cam_refuses(vit):
    x = torch.rand(3, 3, 64, 64)
    for method in ("gradcam", "gradcam++"):
        maps = gradcam(vit, x, method=method)
        assert maps.shape == (3, 64, 64) and maps.min() >= 0 and maps.max() <= 1
        assert (maps.flatten(1).std(dim=1) > 0).all()  # a real map over the patch grid, not a flat one
    with pytest.raises(UserError, match="Grad-CAM"):
        cam(vit, x)


def test_layer_by_name_and_wrong_name_lists_valid_ones(resnet):
    x = torch.rand(2, 3, 128, 128)
    assert torch.allclose(gradcam(resnet, x, layer="layer3"), gradcam(resnet, x, layer=resnet.net.layer3))
    assert torch.allclose(gradcam(resnet, x, layer="net.layer4"), gradcam(resnet, x))
    with pytest.raises(UserError, match=r"layer5.*layer4"):
        gradcam(resnet, x, layer="layer5")


def test_cam_refuses_a_head_that_is_not_gap_plus_linear():
    class MaxPoolNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.features(x).amax(dim=(2, 3)))

    torch.manual_seed(0)
    model = Classifier(MaxPoolNet(), "maxpool_cnn", "timm", "fc", "features").eval()
    with pytest.raises(UserError, match="global average pooling"):
        cam(model, torch.rand(2, 3, 32, 32))
    assert gradcam(model, torch.rand(2, 3, 32, 32)).shape == (2, 32, 32)  # Grad-CAM still applies


def test_wrong_target_count_and_unknown_method_are_user_errors(resnet):
    with pytest.raises(UserError, match="3 targets for a batch of 2"):
        gradcam(resnet, torch.rand(2, 3, 64, 64), [0, 1, 2])
    with pytest.raises(UserError, match="gradcam"):
        explain(resnet, torch.rand(1, 3, 64, 64), "gradcamm")


def test_flat_maps_stay_zero_and_others_span_unit_range():
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.arange(16.0).reshape(4, 4)])
    out = normalize_maps(maps, (8, 8))
    assert out.shape == (3, 8, 8)
    assert out[0].eq(0).all() and out[1].eq(0).all()
    assert out[2].min() == 0 and out[2].max() == 1


def test_torchvision_vit_defaults_to_its_last_block_first_norm():
    torch.manual_seed(0)
    model = create_model("vit_b_16", 3, image_size=32).eval()  # 2x2 patch grid + class token
    x = torch.rand(2, 3, 32, 32)
    maps = gradcam(model, x)
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    assert torch.equal(maps, gradcam(model, x, layer="encoder.layers.encoder_layer_11.ln_1"))
