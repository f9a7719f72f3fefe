"""Every method.* key changes what its method computes, from the config to the model ``fgvc.api.build_model``
makes of it: each test sets a key away from its default and checks the effect against a closed form (or
against a function the method's own tests check against one), so it fails when the key stops reaching the
method (ignored, or replaced by the paper's default)."""

import pytest
import torch
import torch.nn.functional as F

from fgvc import config
from fgvc.api import build_model
from fgvc.methods import METHODS
from fgvc.methods.base import settings_of
from fgvc.methods.isqrt_cov import covariance, triu_index, upper_triangle
from fgvc.methods.wsdan import crop_boxes, crop_resize
from fgvc.train.mixing import soft_cross_entropy

SIZE = 64


def _model(name: str, *settings: str, classes: int = 4):
    torch.manual_seed(0)
    cfg = config.load(None, ["model.name=test_resnet", f"data.image_size={SIZE}", f"method.name={name}", *settings])
    return build_model(cfg, classes)


def _away_from(default):
    """A valid value of a setting that is not its default."""
    if isinstance(default, tuple):  # a threshold range [low, high]
        return [round(default[0] / 2, 3), round(default[1] / 2, 3)]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    return round(default / 2, 4) if default else 0.5


@pytest.mark.parametrize("name", [n for n in METHODS if settings_of(METHODS[n])])
def test_every_setting_of_a_method_reaches_the_model_built_from_the_config(name):
    values = {key: _away_from(default) for key, default in settings_of(METHODS[name]).items()}
    values.update({k: 4 for k in ("attention_maps", "bilinear_dim", "isqrt_dim", "pmg_width", "api_hidden") if k in values})
    model = _model(name, *[f"method.{k}={v}" for k, v in values.items()])
    assert model.method == name
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in model.settings.items()} == values


@pytest.mark.parametrize("name", ["wsdan", "cal"])
def test_attention_maps_is_the_number_of_maps_and_of_part_features(name):
    model = _model(name, "method.attention_maps=3").eval()
    channels = model.features(torch.zeros(1, 3, SIZE, SIZE)).shape[1]
    with torch.no_grad():
        assert model.attention_maps(torch.rand(2, 3, SIZE, SIZE)).shape[:2] == (2, 3)
    assert model.head.in_features == 3 * channels  # M part features of C channels each


def _levels(n: int = 2) -> torch.Tensor:
    """(n, 5, 32, 32) identical attention maps at the image's own size (upsampling leaves them as they are):
    0.5 on rows/columns 2-29 (a quarter of the peak), 1.0 on rows 5-14, columns 8-19 (half), 2.0 at (10, 10)."""
    a = torch.zeros(32, 32)
    a[2:30, 2:30] = 0.5
    a[5:15, 8:20] = 1.0
    a[10, 10] = 2.0
    return a.expand(n, 5, 32, 32).clone()


def _resized(x: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    return F.interpolate(x[..., y0:y1, x0:x1], size=x.shape[-2:], mode="bilinear", align_corners=True)


def test_crop_threshold_and_padding_set_the_training_crop():
    # theta 0.2 of the peak (2.0) keeps every pixel >= 0.4: the quarter-level box, rows and columns 2-29;
    # the paper's range [0.4, 0.6] never reaches it (0.5 < 0.8)
    x = torch.rand(2, 3, 32, 32)
    model = _model("wsdan", "method.attention_maps=5", "method.crop_threshold=[0.2,0.2]", "method.crop_padding=0.0")
    crops, _ = model.augment(x, _levels())
    assert torch.allclose(crops, _resized(x, 2, 30, 2, 30), atol=1e-5)
    # a padding of 0.1 widens that box by int(0.1 * 32) = 3 pixels per edge, clipped to the image
    model = _model("wsdan", "method.attention_maps=5", "method.crop_threshold=[0.2,0.2]", "method.crop_padding=0.1")
    assert torch.allclose(model.augment(x, _levels())[0], _resized(x, 0, 32, 0, 32), atol=1e-5)
    # 0.25: int(0.25 * 32) = 8 pixels around the half-level box of theta 0.5 (rows 5-14, columns 8-19)
    model = _model("wsdan", "method.attention_maps=5", "method.crop_threshold=[0.5,0.5]", "method.crop_padding=0.25")
    assert torch.allclose(model.augment(x, _levels())[0], _resized(x, 0, 23, 0, 28), atol=1e-5)


def test_drop_threshold_sets_the_pixels_dropped():
    x = torch.rand(2, 3, 32, 32) + 0.1  # no pixel is 0 before the drop
    # theta 0.6: only the peak (2.0) reaches 1.2; the paper's range [0.2, 0.5] always drops the half level too
    model = _model("wsdan", "method.attention_maps=5", "method.drop_threshold=[0.6,0.6]")
    _, dropped = model.augment(x, _levels())
    expected = x.clone()
    expected[..., 10, 10] = 0
    assert torch.equal(dropped, expected)
    model = _model("wsdan", "method.attention_maps=5", "method.drop_threshold=[0.2,0.2]")  # >= 0.4: the quarter level
    expected = x.clone()
    expected[..., 2:30, 2:30] = 0
    assert torch.equal(model.augment(x, _levels())[1], expected)


def test_test_crop_threshold_and_padding_set_the_inference_crop():
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for theta, padding in ((0.95, 0.0), (0.95, 0.2)):  # the untrained maps are flat: a high theta to get a box
        model = _model("wsdan", "method.attention_maps=4", f"method.test_crop_threshold={theta}",
                       f"method.test_crop_padding={padding}").eval()
        with torch.no_grad():
            xn = model.normalize(x)
            raw, _, maps = model.attend(xn)
            boxes = crop_boxes(maps.mean(1, keepdim=True), torch.full((2,), theta), (SIZE, SIZE), padding)
            expected = (raw + model.attend(crop_resize(xn, boxes))[0]) / 2
            outputs[padding] = boxes, model(x)
        assert torch.allclose(outputs[padding][1], expected, atol=1e-5)
    (tight, a), (padded, b) = outputs[0.0], outputs[0.2]
    assert ((tight[:, 1] - tight[:, 0] < SIZE) | (tight[:, 3] - tight[:, 2] < SIZE)).any()  # a box, not the image
    assert not torch.equal(tight, padded)  # the keys moved the box ...
    assert not torch.allclose(a, b, atol=1e-4)  # ... and the logits with it


def test_center_momentum_is_the_rate_the_centres_move_at():
    # centres start at 0 (normalize(0) = 0): one step moves class k's centre to beta * mean of its part features
    model = _model("wsdan", "method.attention_maps=3", "method.center_momentum=0.3", classes=3).train()
    x, labels = torch.rand(5, 3, SIZE, SIZE), torch.tensor([0, 2, 2, 0, 2])
    with torch.no_grad():
        parts = model.attend(model.normalize(x))[1]  # train mode: batch statistics, as the step computes them
    model.train_loss(x, torch.eye(3)[labels], soft_cross_entropy, model)
    centers = model.head_module.centers
    for k in (0, 2):
        assert torch.allclose(centers[k], 0.3 * parts[labels == k].mean(0), atol=1e-5)
    assert not centers[1].any()


def test_isqrt_iterations_is_the_number_of_newton_schulz_steps():
    # one coupled step from Y0 = A = Sigma / tr(Sigma), Z0 = I: Y1 = A (3I - A) / 2, times sqrt(tr(Sigma))
    model = _model("isqrt_cov", "method.isqrt_dim=4", "method.isqrt_iterations=1").eval()
    head = model.head_module
    with torch.no_grad():
        fmap = model.features(model.normalize(torch.rand(2, 3, SIZE, SIZE)))
        sigma = covariance(head.reduce(fmap).double())
        trace = sigma.diagonal(dim1=1, dim2=2).sum(1)[:, None, None]
        a = sigma / trace
        one_step = a @ (3 * torch.eye(4, dtype=torch.float64) - a) / 2 * trace.sqrt()
        assert torch.allclose(head.pooled(fmap).double(), upper_triangle(one_step, triu_index(4)), atol=1e-5)
        more = _model("isqrt_cov", "method.isqrt_dim=4", "method.isqrt_iterations=3").eval()
        more.load_state_dict(model.state_dict())
        assert not torch.allclose(more.head_module.pooled(fmap), head.pooled(fmap), atol=1e-4)


def test_pmg_width_and_api_hidden_are_the_hidden_widths():
    pmg = _model("pmg", "method.pmg_width=6")
    assert all(c[1].out_features == 6 for c in pmg.head_module.classifiers)  # linear to the hidden width
    assert all(b[0][0].out_channels == 6 for b in pmg.head_module.blocks)  # the conv blocks' inner width
    api = _model("api_net", "method.api_hidden=5")
    assert api.head_module.map1.out_features == 5 and api.head_module.map2.in_features == 5
