import math

import pytest
import torch
from explain_helpers import fit, make_squares, tiny_classifier

from fgvc.explain import box_area_share, energy_in_box, evaluate_localization, format_table, pointing_game


def test_energy_in_box_on_hand_made_maps():
    m = torch.zeros(10, 10)
    m[2:4, 3:6] = 1.0
    assert energy_in_box(m, (3, 2, 6, 4)) == pytest.approx(1.0)  # all mass inside
    assert energy_in_box(m, (6, 6, 10, 10)) == pytest.approx(0.0)  # all mass outside
    assert energy_in_box(m, (3, 2, 4.5, 4)) == pytest.approx(0.5)  # 1.5 of 3 columns: cut pixels count by area
    # a uniform map scores exactly the box's area share: the chance level
    box = (1.5, 2, 7, 9.25)
    assert energy_in_box(torch.ones(10, 10), box) == pytest.approx(box_area_share(box, 10, 10))
    assert math.isnan(energy_in_box(torch.zeros(10, 10), box))  # no mass, no share


def test_box_area_share_clips_to_the_image():
    assert box_area_share((0, 0, 10, 10), 10, 10) == 1.0
    assert box_area_share((-5, 0, 5, 10), 10, 10) == 0.5
    assert box_area_share((2, 2, 4, 7), 10, 20) == pytest.approx(10 / 200)
    assert box_area_share((12, 0, 15, 5), 10, 10) == 0.0


def test_pointing_game_hits_misses_tolerance_and_plateaus():
    m = torch.zeros(20, 20)
    m[5, 8] = 1.0  # pixel centre (8.5, 5.5)
    assert pointing_game(m, (8, 5, 9, 6))
    assert not pointing_game(m, (10, 0, 20, 20))
    assert pointing_game(m, (10, 0, 20, 20), tolerance_px=2)
    assert not pointing_game(torch.zeros(20, 20), (0, 0, 20, 20))  # a zero map points nowhere
    plateau = torch.zeros(20, 20)
    plateau[0:10, 0:10] = 1.0  # the peak region's centre (5, 5), not its corner, is where it points
    assert pointing_game(plateau, (4, 4, 6, 6))
    assert not pointing_game(plateau, (0, 0, 2, 2))


def _loader(x, y, boxes, batch=32):
    return [(x[i:i + batch], y[i:i + batch], boxes[i:i + batch]) for i in range(0, len(x), batch)]


def test_trained_maps_concentrate_in_the_box_and_random_weights_do_not(trained_tiny, squares_test):
    # the seed's "CAM concentrates on the object" as a number, with Adebayo et al.'s
    # randomisation check: the same architecture untrained must not score the same
    loader = _loader(*squares_test)
    methods = ["cam", "gradcam", "gradcam++"]
    trained = evaluate_localization(trained_tiny, loader, methods, progress=False)
    random = evaluate_localization(tiny_classifier(seed=1), loader, methods, progress=False)
    for m in methods:
        r, r0 = trained[m], random[m]
        assert r["n"] == 64 and r["n_empty"] == 0
        assert r["energy_in_box"] > 3 * r["box_area_share"], (m, r)
        assert r["energy_in_box"] > r0["energy_in_box"] + 0.15, (m, r, r0)
        assert r["pointing_game"] > 0.8 > r0["pointing_game"], (m, r, r0)


def test_evaluate_localization_limit_skips_boxless_images_and_tables(trained_tiny, squares_test):
    x, y, boxes = squares_test
    boxes = boxes.clone()
    boxes[0] = float("nan")  # an image without a box is skipped, not scored as a miss
    out = evaluate_localization(trained_tiny, _loader(x, y, boxes, batch=8), ["cam"], limit=10, progress=False)
    assert out["cam"]["n"] == 10
    table = format_table(out)
    assert "| cam |" in table and "pointing game" in table
    assert f"{out['cam']['energy_in_box']:.3f}" in table


@pytest.mark.slow
def test_test_resnet_trained_on_squares_localises_better_than_random():
    # a real fgvc backbone (timm test_resnet, 2x2 last map at 64 px: coarse, but still above chance)
    from fgvc.models import create_model

    x, y, _ = make_squares(256, seed=0)
    xt, yt, bt = make_squares(64, seed=1)
    torch.manual_seed(0)
    model = fit(create_model("test_resnet", 4, image_size=64), x, y, epochs=8)
    torch.manual_seed(1)
    untrained = create_model("test_resnet", 4, image_size=64).eval()
    loader = _loader(xt, yt, bt)
    trained = evaluate_localization(model, loader, ["cam", "gradcam"], progress=False)
    random = evaluate_localization(untrained, loader, ["cam", "gradcam"], progress=False)
    for m in ("cam", "gradcam"):
        assert trained[m]["energy_in_box"] > 1.8 * trained[m]["box_area_share"], trained[m]
        assert trained[m]["energy_in_box"] > random[m]["energy_in_box"] + 0.04, (trained[m], random[m])


def test_a_method_whose_maps_are_all_flat_shows_n_a_and_counts_them():
    flat = {"energy_in_box": float("nan"), "pointing_game": float("nan"), "box_area_share": 0.441, "n": 24,
            "n_empty": 24}
    row = format_table({"cam": flat}).splitlines()[-1]
    assert row == "| cam | n/a | 0.441 | n/a | 24 (24 flat maps) |" and "nan" not in row


class _PickFirstChannel(torch.nn.Module):
    """A CAM model whose one feature channel is the image's first channel (a 1x1 conv), pooled, weighted +1 for
    class 0: the class-0 map is that channel, so a test sets each map's peak, or makes it flat (all zero)."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(3, 1, 1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.features.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def test_flat_maps_are_left_out_of_the_pointing_game_as_of_energy_in_box():
    from fgvc.models.factory import Classifier

    model = Classifier(_PickFirstChannel(), "first_channel", "resnet", "fc", "features", mean=(0.0,) * 3,
                       std=(1.0,) * 3)
    x = torch.zeros(8, 3, 4, 4)
    x[0::2, 0, 2, 2] = 1.0  # images 0, 2, 4, 6: a peak at (row 2, col 2); 1, 3, 5, 7: all zero (flat)
    boxes = torch.tensor([[2.0, 2.0, 3.0, 3.0]]).repeat(8, 1)  # the peak's pixel: every non-flat map hits
    out = evaluate_localization(model, [(x, torch.zeros(8, dtype=torch.long), boxes)], ["cam"], progress=False)
    r = out["cam"]
    assert r["n"] == 8 and r["n_empty"] == 4
    assert r["pointing_game"] == 1.0  # 4 hits of the 4 maps with a peak; flat maps as misses gave 0.5
    assert r["energy_in_box"] == pytest.approx(1.0)
    all_flat = evaluate_localization(model, [(x[1::2], torch.zeros(4, dtype=torch.long), boxes[:4])], ["cam"],
                                     progress=False)["cam"]
    assert all_flat["n_empty"] == 4 and math.isnan(all_flat["pointing_game"]) and math.isnan(all_flat["energy_in_box"])
