"""Calibration: ECE (equal width, equal mass), NLL, Brier, temperature scaling."""

import math

import pytest
import torch
import torch.nn.functional as F

from fgvc.calibration import (
    bin_stats,
    brier_score,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    scores,
)


def _calibrated(n=200_000, classes=10, seed=0):
    """Top-label probability p ~ U(0.1, 1) on a random class, the rest spread evenly; the label is that
    class with probability p (else another one): calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    p = 0.1 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    top = torch.randint(classes, (n,), generator=g)
    probs = ((1 - p) / (classes - 1))[:, None].expand(n, classes).clone()
    probs[torch.arange(n), top] = p
    hit = torch.rand(n, generator=g, dtype=torch.float64) < p
    other = (top + torch.randint(1, classes, (n,), generator=g)) % classes
    return probs, torch.where(hit, top, other)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_a_calibrated_predictor_has_ece_near_zero(binning):
    probs, labels = _calibrated()
    assert expected_calibration_error(probs, labels, 15, binning) < 0.005


def test_a_known_miscalibration_equals_the_closed_form():
    # half the images: confidence 0.95, accuracy 0.5; the other half: confidence 0.55, accuracy 1.0
    # ECE = 0.5 * |0.5 - 0.95| + 0.5 * |1.0 - 0.55| = 0.45, with equal-width (15) or equal-mass (2) bins
    n = 1000
    probs = torch.zeros(2 * n, 2, dtype=torch.float64)
    probs[:n] = torch.tensor([0.95, 0.05], dtype=torch.float64)
    probs[n:] = torch.tensor([0.55, 0.45], dtype=torch.float64)
    labels = torch.zeros(2 * n, dtype=torch.long)
    labels[: n // 2] = 1  # half of the confident images are wrong
    assert expected_calibration_error(probs, labels, 15, "width") == pytest.approx(0.45, abs=1e-9)
    assert expected_calibration_error(probs, labels, 2, "mass") == pytest.approx(0.45, abs=1e-9)
    # one constant confidence 0.8 with accuracy 0.25: |0.25 - 0.8| whatever the binning
    probs = torch.tensor([[0.8, 0.2]] * 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1, 0, 1, 1, 1])
    for binning, bins in (("width", 10), ("mass", 1), ("mass", 4)):
        assert expected_calibration_error(probs, labels, bins, binning) == pytest.approx(0.55, abs=1e-6)


def test_equal_width_ece_agrees_with_torchmetrics_below_confidence_one():
    # an independent reference where no confidence is exactly 1.0 (there torchmetrics adds a bin)
    from torchmetrics.functional.classification import multiclass_calibration_error

    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(5000, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(7, (5000,), generator=g)
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    assert conf.max() < 1
    reference = float(multiclass_calibration_error(probs, labels, num_classes=7, n_bins=15, norm="l1"))
    assert expected_calibration_error(probs, labels, 15, "width") == pytest.approx(reference, abs=1e-6)
    assert sum(b["n"] for b in bin_stats(conf, pred == labels, 15, "mass")) == 5000


def test_brier_and_nll_closed_forms():
    assert brier_score(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == 0
    assert brier_score(torch.tensor([[0.5, 0.5]]), torch.tensor([1])) == pytest.approx(0.5)
    assert brier_score(torch.tensor([[0.0, 1.0]]), torch.tensor([0])) == pytest.approx(2.0)
    s = scores(torch.zeros(4, 4), torch.tensor([0, 1, 2, 3]))
    assert s["nll"] == pytest.approx(math.log(4)) and s["brier"] == pytest.approx(0.75)


def _overconfident(n, seed, sharpen=4.0):
    """Labels drawn from softmax(z) (calibrated logits z); the model reports sharpen * z."""
    g = torch.Generator().manual_seed(seed)
    z = 1.5 * torch.randn(n, 5, generator=g, dtype=torch.float64)
    labels = torch.multinomial(z.softmax(1), 1, generator=g).flatten()
    return sharpen * z, labels


def test_temperature_scaling_fitted_on_val_lowers_test_nll_of_an_overconfident_model():
    val_logits, val_labels = _overconfident(4000, 0)
    test_logits, test_labels = _overconfident(4000, 1)
    t = fit_temperature(val_logits, val_labels)
    assert t == pytest.approx(4.0, rel=0.15)  # recovers the sharpening
    result = calibrate(val_logits, val_labels, test_logits, test_labels)
    before, after = result["test"]["before"], result["test"]["after"]
    assert result["temperature"] == t and result["fitted_on"] == "val"
    assert after["nll"] < before["nll"] - 0.1 and after["ece"] < before["ece"] and after["brier"] < before["brier"]
    assert after["acc"] == before["acc"]  # one temperature never changes the argmax
    assert after["nll"] == pytest.approx(float(F.cross_entropy(test_logits / t, test_labels)))
    assert "warning" not in result  # 4000 images, a plausible temperature


def test_a_temperature_fitted_on_a_tiny_all_correct_val_split_is_flagged():
    # 8 validation images, all right: NLL keeps falling as T shrinks, so the "fit" is meaningless
    logits = torch.eye(4).repeat(2, 1) * 3.0
    labels = torch.arange(4).repeat(2)
    test_logits, test_labels = _overconfident(500, 5)
    result = calibrate(logits, labels, test_logits, test_labels)
    assert "only 8 validation images" in result["warning"] and "every validation image" in result["warning"]


def test_temperature_is_fitted_on_the_val_logits_given():
    # val says "sharpened 4x", test is calibrated: a temperature fitted on test would be ~1
    val_logits, val_labels = _overconfident(3000, 2)
    test_logits, test_labels = _overconfident(3000, 3, sharpen=1.0)
    assert calibrate(val_logits, val_labels, test_logits, test_labels)["temperature"] > 3


def test_reliability_diagram_is_a_png(tmp_path):
    logits, labels = _overconfident(500, 4)
    path = plot_reliability(logits, labels, 4.0, tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _confidence_one():
    """Two images right at p = 0.948; two at a logit gap of 40 (p = 1.0 in float64), one of them right."""
    x = math.log(0.948 / 0.052)
    logits = torch.tensor([[0, x], [0, x], [0, 40.0], [0, 40.0]], dtype=torch.float64)
    return logits, torch.tensor([1, 1, 1, 0])


def test_confidence_of_exactly_one_falls_in_the_last_of_fifteen_bins():
    # one bin [14/15, 1] holds all four: |accuracy 0.75 - mean confidence (2 * 0.948 + 2) / 4| = 0.224
    # (torchmetrics' multiclass_calibration_error puts p = 1.0 in a 16th bin of its own: 0.276)
    logits, labels = _confidence_one()
    assert logits.softmax(1).max(1).values[2] == 1.0
    assert expected_calibration_error(logits.softmax(1), labels) == pytest.approx(0.224, abs=1e-12)
    assert scores(logits, labels)["ece"] == pytest.approx(0.224, abs=1e-12)
    (b,) = bin_stats(logits.softmax(1).max(1).values, torch.tensor([1, 1, 1, 0]) == 1)
    assert (b["lo"], b["hi"], b["n"]) == (pytest.approx(14 / 15), 1.0, 4)


def test_reliability_diagram_legend_shows_the_ece_of_its_bars(tmp_path, monkeypatch):
    from fgvc import runs

    figures = []
    monkeypatch.setattr(runs, "save_figure", lambda fig, path, **kw: figures.append(fig) or path)
    logits, labels = _confidence_one()
    plot_reliability(logits, labels, 1.0, tmp_path / "r.png")
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert "accuracy per bin (ECE 0.224)" in legend
