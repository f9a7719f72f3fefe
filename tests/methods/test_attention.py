"""WS-DAN and CAL against their definitions: attention pooling, crop boxes, drop masks, centres, effect."""

import pytest
import torch
import torch.nn.functional as F

from fgvc.methods import build_method, cal, wsdan
from fgvc.methods.wsdan import (
    attention_pooling,
    center_loss,
    crop_boxes,
    crop_resize,
    drop_mask,
    pick_maps,
    update_centers,
)
from fgvc.models import create_model
from fgvc.train.mixing import soft_cross_entropy


def test_attention_pooling_is_the_mean_of_attention_times_features():
    fmap, maps = torch.randn(2, 5, 3, 4), torch.rand(2, 3, 3, 4)
    parts = torch.stack([torch.stack([(maps[b, m] * fmap[b, c]).mean() for m in range(3) for c in range(5)])
                         for b in range(2)])
    expected = F.normalize(parts.sign() * parts.abs().sqrt(), dim=1)
    assert torch.allclose(attention_pooling(fmap, maps, eps=0.0), expected, atol=1e-6)
    assert torch.allclose(attention_pooling(fmap, maps).norm(dim=1), torch.ones(2))


def rectangle(size, y0, y1, x0, x1, value=1.0):
    a = torch.zeros(1, 1, size, size)
    a[..., y0:y1, x0:x1] = value
    return a


def test_crop_box_of_a_rectangle_of_attention_is_that_rectangle():
    a = torch.cat([rectangle(32, 5, 15, 8, 20), rectangle(32, 0, 32, 30, 32, 0.3)])
    a[0, 0, 10, 10] = 2.0  # the peak; the rest of the rectangle is at half of it
    boxes = crop_boxes(a, torch.tensor([0.5, 0.5]), (32, 32), padding=0.0)
    assert boxes.tolist() == [[5, 15, 8, 20], [0, 32, 30, 32]]
    padded = crop_boxes(a, torch.tensor([0.5, 0.5]), (32, 32), padding=0.1)  # int(3.2) = 3 pixels per edge
    assert padded.tolist() == [[2, 18, 5, 23], [0, 32, 27, 32]]
    only_peak = crop_boxes(a[:1], torch.tensor([0.9]), (32, 32), padding=0.0)
    assert only_peak.tolist() == [[10, 11, 10, 11]]


def test_crop_box_of_an_upsampled_map_follows_the_bilinear_tent():
    # one hot cell (1, 2) of a 4 x 4 map, upsampled to 31 px with corners aligned: pixel p sits at
    # map coordinate p / 10, so the value is 1 - |p / 10 - 1| along rows and >= 0.5 for p in 5..15
    a = rectangle(4, 1, 2, 2, 3)
    assert crop_boxes(a, torch.tensor([0.5]), (31, 31), padding=0.0).tolist() == [[5, 16, 15, 26]]


def test_crop_resize_equals_slicing_and_interpolating():
    x = torch.rand(3, 3, 20, 24)
    boxes = torch.tensor([[2, 12, 5, 21], [0, 20, 0, 24], [7, 8, 3, 9]])
    out = crop_resize(x, boxes)
    for img, (y0, y1, x0, x1) in zip(range(3), boxes.tolist(), strict=True):
        expected = F.interpolate(x[img:img + 1, :, y0:y1, x0:x1], size=(20, 24), mode="bilinear",
                                 align_corners=True)
        assert torch.allclose(out[img:img + 1], expected, atol=1e-5), (y0, y1, x0, x1)


def test_drop_mask_is_exactly_where_attention_reaches_theta_times_its_maximum():
    a = torch.rand(4, 1, 16, 16)
    theta = torch.tensor([0.2, 0.35, 0.5, 0.9])
    mask = drop_mask(a, theta, (16, 16))
    peak = a.flatten(1).amax(1)[:, None, None, None]
    assert torch.equal(mask, a >= theta[:, None, None, None] * peak)


def test_maps_without_attention_are_never_drawn():
    maps = torch.zeros(5, 6, 4, 4)
    maps[:, 3] = torch.rand(5, 4, 4) + 0.1
    torch.manual_seed(0)
    picked = pick_maps(maps)
    assert torch.equal(picked, maps[:, [3, 3]])


def test_maps_of_a_diverged_network_are_drawn_uniformly_instead_of_raising():
    maps = torch.zeros(3, 4, 2, 2)
    maps[:, 2] = 1.0
    maps[1, 1, 0, 0] = float("nan")  # image 1: a nan map
    maps[2, 0] = float("inf")  # image 2: an infinite one
    torch.manual_seed(0)
    picked = pick_maps(maps)  # torch.multinomial raises on nan or inf weights
    assert torch.equal(picked[0], maps[0, [2, 2]])  # a finite image draws as before
    for img in (1, 2):
        for drawn in picked[img]:
            assert any(torch.allclose(drawn, m, equal_nan=True) for m in maps[img])


def test_centre_update_rule():
    centers = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    parts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 2, 2])
    before = centers.clone()
    targets = update_centers(centers, parts, labels, momentum=0.5)
    assert torch.allclose(targets, torch.tensor([[0.6, 0.8], [1.0, 0.0], [1.0, 0.0]]))
    # class 0: one image; class 2: the mean of its two images' steps; class 1: untouched
    expected = before.clone()
    expected[0] += 0.5 * (parts[0] - torch.tensor([0.6, 0.8]))
    expected[2] += 0.5 * ((parts[1] - before[2]) + (parts[2] - before[2])) / 2
    assert torch.allclose(centers, expected)
    assert torch.allclose(center_loss(parts, targets), (parts - targets).pow(2).sum() / 3)


def test_centre_update_is_the_closed_form_and_leaves_absent_classes_bit_for_bit():
    torch.manual_seed(0)
    centers, parts = torch.randn(6, 5), F.normalize(torch.randn(9, 5), dim=1)
    labels = torch.tensor([0, 0, 0, 2, 2, 3, 5, 5, 5])
    before = centers.clone()
    update_centers(centers, parts, labels, momentum=0.05)
    for k in range(6):
        mine = labels == k
        if mine.any():  # c_k + beta * mean_{i: y_i = k} (f_i - normalize(c_k))
            step = (parts[mine] - F.normalize(before[k], dim=0)).mean(0)
            assert torch.allclose(centers[k], before[k] + 0.05 * step, atol=1e-7)
        else:
            assert torch.equal(centers[k], before[k])  # absent: moved by exactly +0.0


def test_centre_update_never_reads_the_data_to_shape_a_tensor():
    # meta tensors carry shapes, no values: an update that indexed by a data-dependent mask (a host sync
    # every training step on a GPU) could not run on them
    centers = torch.zeros(6, 5, device="meta")
    targets = update_centers(centers, torch.zeros(4, 5, device="meta"), torch.zeros(4, dtype=torch.long,
                                                                                    device="meta"), 0.05)
    assert targets.shape == (4, 5) and centers.shape == (6, 5)


def tiny(name="wsdan", classes=3, **settings):
    torch.manual_seed(0)
    return build_method(name, create_model("resnet18", classes), classes, 0.0, attention_maps=4, **settings)


def test_inference_averages_raw_and_attention_cropped_logits():
    model = tiny(test_crop_threshold=0.8).eval()  # a tight box: the crop differs from the image
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        xn = model.normalize(x)
        raw, _, maps = model.attend(xn)
        boxes = crop_boxes(maps.mean(1, keepdim=True), torch.full((2,), 0.8), (128, 128), 0.05)
        assert (boxes[:, 1] - boxes[:, 0] < 128).any()
        crop = model.attend(crop_resize(xn, boxes))[0]
        assert torch.allclose(model(x), (raw + crop) / 2, atol=1e-5)
        assert not torch.allclose(model(x), raw, atol=1e-4)  # the refinement changes the logits


def test_training_step_moves_the_centres_and_adds_the_centre_loss():
    model = tiny().train()
    x, target = torch.rand(4, 3, 64, 64), torch.eye(3)[[0, 1, 2, 0]]
    centers = model.head_module.centers
    assert not centers.any()
    torch.manual_seed(1)
    loss, logits = model.train_loss(x, target, soft_cross_entropy, model)
    assert centers[:3].any() and logits.shape == (4, 3)
    weightless = tiny(center_weight=0.0).train()
    weightless.load_state_dict({k: v for k, v in model.state_dict().items() if "centers" not in k}, strict=False)
    # the same draws, centres at zero: the centre term of a zero centre is ||f||^2 = 1 per image
    fresh = tiny().train()
    torch.manual_seed(1)
    loss_fresh, _ = fresh.train_loss(x, target, soft_cross_entropy, fresh)
    torch.manual_seed(1)
    loss_without, _ = weightless.train_loss(x, target, soft_cross_entropy, weightless)
    assert torch.allclose(loss_fresh - loss_without, torch.tensor(1.0), atol=1e-4)


def test_cal_effect_is_zero_when_the_random_attention_is_the_real_one():
    model = tiny("cal").eval()
    head = model.head_module
    fmap = model.features(model.normalize(torch.rand(2, 3, 64, 64)))
    maps = head.attention(fmap)
    logits = head.classify(head.pool(fmap, maps))
    assert torch.equal(cal.effect_logits(head, fmap, logits, maps), torch.zeros(2, 3))
    assert cal.effect_logits(head, fmap, logits, cal.random_attention(maps)).abs().sum() > 0


def test_cals_training_step_scores_the_effect_that_effect_logits_computes(monkeypatch):
    a, b = tiny("cal", effect_weight=1.0).train(), tiny("cal", effect_weight=0.0).train()
    b.load_state_dict(a.state_dict())
    calls = []

    def uniform_effect(head, fmap, logits, counterfactual):  # effect logits of 0: CE = ln 3 per image
        calls.append(len(logits))
        return torch.zeros_like(logits)

    monkeypatch.setattr(cal, "effect_logits", uniform_effect)
    x, target = torch.rand(2, 3, 64, 64), torch.eye(3)[[0, 1]]
    torch.manual_seed(3)
    with_effect = a.train_loss(x, target, soft_cross_entropy, a)[0]
    torch.manual_seed(3)
    without = b.train_loss(x, target, soft_cross_entropy, b)[0]
    assert calls == [2, 4, 2, 4]  # the raw pass and the crop + drop pass, of each model
    assert torch.allclose(with_effect - without, torch.log(torch.tensor(3.0)), atol=1e-5)


def test_cal_reads_its_effect_weight_and_wsdan_does_not():
    from fgvc.methods.base import settings_of

    assert "effect_weight" in settings_of(cal.Method) and "effect_weight" not in settings_of(wsdan.Method)
    a, b = tiny("cal", effect_weight=1.0).train(), tiny("cal", effect_weight=0.0).train()
    b.load_state_dict(a.state_dict())
    x, target = torch.rand(2, 3, 64, 64), torch.eye(3)[[0, 1]]
    torch.manual_seed(3)
    with_effect = a.train_loss(x, target, soft_cross_entropy, a)[0]
    torch.manual_seed(3)
    without = b.train_loss(x, target, soft_cross_entropy, b)[0]
    assert with_effect > without


def test_explain_attention_draws_the_mean_map_and_refuses_a_model_without_one():
    from fgvc.errors import UserError
    from fgvc.explain import explain

    model = tiny(test_crop_threshold=0.5).eval()
    x = torch.rand(2, 3, 128, 128)
    maps = explain(model, x, "attention")
    with torch.no_grad():
        mean = model.attention_maps(x).mean(1)
    expected = F.interpolate(mean[:, None], size=(128, 128), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = expected.flatten(1).amin(1), expected.flatten(1).amax(1)
    assert torch.allclose(maps, (expected - lo[:, None, None]) / (hi - lo)[:, None, None], atol=1e-5)
    with pytest.raises(UserError, match="method.name=wsdan or cal"):
        explain(create_model("resnet18", 3), x, "attention")


def test_a_bad_threshold_range_is_one_sentence():
    from fgvc import config
    from fgvc.errors import UserError

    with pytest.raises(UserError, match="method.crop_threshold"):
        config.load(overrides=["method.crop_threshold=[0.7,0.2]"])
