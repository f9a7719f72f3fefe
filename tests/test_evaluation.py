"""`fgvc eval RUN`: calibration, TTA beside the plain numbers, open-set scores."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc import api, runs
from fgvc.cli import main
from fgvc.openset import auroc, coverage_curve, fpr_at_tpr, ood_scores, openset_report
from fgvc.tta import TTAModel, tta_transform


class FlipSymmetric(torch.nn.Module):
    """f(x) + f(mirror(x)): invariant to horizontal flips by construction."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) + self.model(x.flip(-1))


class DarkIsUnsure(torch.nn.Module):
    """The run's logits scaled by the image's mean brightness: a black image gets all-zero logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * (20 * x.mean(dim=(1, 2, 3)))[:, None]


def _wrap_loaded_model(monkeypatch, wrapper):
    load = api.load

    def wrapped_load(run_dir, checkpoint="best"):
        model, names = load(run_dir, checkpoint)
        return wrapper(model).eval(), names

    monkeypatch.setattr(api, "load", wrapped_load)


def _eval(capsys, *argv):
    assert main(["eval", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# ------------------------------------------------------------------ calibration through `fgvc eval`

def test_eval_reports_calibration_on_val_and_test_with_a_temperature_from_val(tiny_run, capsys):
    result = _eval(capsys, tiny_run)  # split test
    recorded = runs.read_metrics(tiny_run)
    cal = result["calibration"]
    assert cal["fitted_on"] == "val" and cal["temperature"] > 0
    assert cal["val"]["before"]["n"] == recorded["val_images"] and cal["test"]["before"]["n"] == recorded["test_images"]
    # the test scores are those of the run's test logits: NLL before scaling is the eval loss
    assert cal["test"]["before"]["nll"] == pytest.approx(result["loss"], abs=1e-5)
    assert cal["test"]["before"]["acc"] == pytest.approx(result["acc"]) == pytest.approx(cal["test"]["after"]["acc"])
    # temperature scaling never raises the NLL of the split it was fitted on
    assert cal["val"]["after"]["nll"] <= cal["val"]["before"]["nll"] + 1e-9
    for part in ("val", "test"):
        for when in ("before", "after"):
            s = cal[part][when]
            assert 0 <= s["ece"] <= 1 and 0 <= s["ece_mass"] <= 1 and 0 <= s["brier"] <= 2
    assert (tiny_run / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tiny_run / "eval_test.json").read_text())
    assert saved["calibration"] == cal and saved["protocol"]["tta"] == "none"
    assert "tta" not in result and "openset" not in result


# ------------------------------------------------------------------ TTA

def test_tta_flip_of_a_flip_invariant_model_equals_the_plain_numbers(tiny_run, capsys, monkeypatch):
    _wrap_loaded_model(monkeypatch, FlipSymmetric)
    result = _eval(capsys, tiny_run, "--tta", "flip")
    tta = result["tta"]
    assert tta["mode"] == "flip" and tta["views"] == 2 and tta["protocol"]["tta"] == "flip"
    assert tta["n"] == result["n"] and tta["acc"] == result["acc"] and tta["gain"] == 0
    assert tta["loss"] == pytest.approx(result["loss"], abs=1e-5)


@pytest.mark.parametrize("mode, views", [("flip", 2), ("five-crop", 5), ("ten-crop", 10)])
def test_tta_scores_other_inputs_beside_the_plain_numbers(tiny_run, capsys, mode, views):
    plain = _eval(capsys, tiny_run)
    result = _eval(capsys, tiny_run, "--tta", mode)
    assert result["acc"] == plain["acc"] and result["loss"] == plain["loss"]  # the headline stays the plain one
    tta = result["tta"]
    assert tta["views"] == views and tta["n"] == plain["n"]
    assert abs(tta["loss"] - plain["loss"]) > 1e-4  # a model that is not invariant sees other inputs
    assert json.loads((tiny_run / "eval_test.json").read_text())["tta"]["mode"] == mode


def test_tta_views_differ_from_the_input_and_are_averaged_as_probabilities():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 4))
    tta = TTAModel(net, "flip")
    views = tta.views(x)
    assert torch.equal(views[:, 0], x) and torch.equal(views[:, 1], x.flip(-1)) and not torch.equal(views[:, 1], x)
    expected = ((net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2).log()
    assert torch.allclose(tta(x), expected, atol=1e-6)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    crops = tta_transform(32, "ten-crop")(image)
    assert crops.shape == (10, 3, 32, 32) and not torch.equal(crops[0], crops[4])
    assert torch.equal(crops[:5], tta_transform(32, "five-crop")(image))  # then the crops of the mirror image
    assert not any(torch.equal(crops[5 + i], crops[i]) for i in range(5))


def test_a_bad_tta_mode_is_refused(tiny_run, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tiny_run), "--tta", "rotate"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------ open set

def test_open_set_scores_of_planted_unknowns():
    g = torch.Generator().manual_seed(0)
    known = 6 * torch.nn.functional.one_hot(torch.randint(5, (200,), generator=g), 5).double() \
        + torch.randn(200, 5, generator=g, dtype=torch.float64)
    labels = known.argmax(1)
    unknown = torch.randn(100, 5, generator=g, dtype=torch.float64)  # no class stands out
    report = openset_report(known, labels, unknown)
    for name in ("msp", "energy", "max_logit"):
        assert report["scores"][name]["auroc"] > 0.9
        assert report["scores"][name]["fpr_at_95_tpr"] < 0.5
    # a constant score cannot tell them apart: exactly one half
    assert auroc(torch.full((200,), 3.0), torch.full((100,), 3.0)) == 0.5
    # the closed form on a small case: 3 of 4 (known, unknown) pairs ordered right
    assert auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0])) == 0.75
    # scores far outside [0, 1] are ranked, not squashed into ties by a sigmoid
    assert auroc(torch.tensor([200.0, 300.0]), torch.tensor([100.0, 150.0])) == 1.0
    assert fpr_at_tpr(torch.arange(100.0), torch.arange(100.0)) == 0.95
    s = ood_scores(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    assert s["max_logit"].tolist() == [2.0, 0.0] and s["msp"][1] == 0.5
    assert s["energy"][1] == pytest.approx(np.log(2))
    coverage, accuracy = coverage_curve(torch.tensor([0.9, 0.1, 0.5]), torch.tensor([1, 0, 1]))
    assert coverage == pytest.approx([1 / 3, 2 / 3, 1.0]) and accuracy == pytest.approx([1.0, 1.0, 2 / 3])


def test_eval_unknown_folder_reports_auroc_and_writes_the_curve(tiny_run, tmp_path, capsys, monkeypatch):
    unknown = tmp_path / "unknown" / "nested"
    unknown.mkdir(parents=True)
    for i in range(6):  # planted unknowns: black images, on which the wrapped model has no opinion
        Image.new("RGB", (40 + i, 36), (0, 0, 0)).save(unknown / f"u{i}.jpg")
    _wrap_loaded_model(monkeypatch, DarkIsUnsure)
    result = _eval(capsys, tiny_run, "--unknown", tmp_path / "unknown")
    o = result["openset"]
    assert o["unknown_images"] == 6 and o["known_images"] == result["n"] and o["known_split"] == "test"
    assert o["scores"]["msp"]["auroc"] > 0.5 and o["scores"]["msp"]["unknown_mean"] == pytest.approx(1 / 4)
    assert set(o["scores"]) == {"msp", "energy", "max_logit"}
    assert (tiny_run / "openset_test.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make, words", [(lambda p: p / "missing", "is not a folder"),
                                         (lambda p: p, "holds no images")])
def test_eval_unknown_bad_folder_is_one_sentence(tiny_run, tmp_path, capsys, make, words):
    folder = make(tmp_path)
    assert main(["eval", str(tiny_run), "--unknown", str(folder)]) == 2
    err = capsys.readouterr().err
    assert words in err and "--unknown" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_lists_eval_results_with_tta_beside_the_plain_accuracy(tiny_run, capsys):
    from fgvc.report import write_report

    result = _eval(capsys, tiny_run, "--tta", "flip")
    text = write_report(tiny_run.parent, tiny_run.parent / "report").read_text()
    assert "## Evaluations (fgvc eval)" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {tiny_run.name} | test |"))
    cal = result["calibration"]["test"]
    assert f"| {result['acc']:.4f} | {result['tta']['acc']:.4f} (flip) |" in row
    assert f"{cal['before']['nll']:.4f} -> {cal['after']['nll']:.4f}" in row
