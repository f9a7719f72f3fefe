"""Per-class accuracy, confusions and the confusion plot; `fgvc eval` writes them."""

import json

import pytest
import torch

from fgvc.cli import main
from fgvc.metrics import class_report, confusion_matrix, plot_confusion

NAMES = ["a", "b", "c"]


def test_report_by_hand():
    # a: 3 images, 2 right, 1 called c; b: 1 image, called a; c: none
    labels, pred = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 2, 0])
    conf = confusion_matrix(labels, pred, 3)
    assert conf.tolist() == [[2, 0, 1], [1, 0, 0], [0, 0, 0]]
    report = class_report(conf, NAMES)
    assert report["per_class_acc"] == {"a": pytest.approx(2 / 3), "b": 0.0, "c": None}
    assert report["per_class_n"] == {"a": 3, "b": 1, "c": 0}
    assert report["mean_class_acc"] == pytest.approx((2 / 3 + 0) / 2)  # classes without images do not count
    assert report["confusions"] == [{"true": "a", "predicted": "c", "count": 1, "rate": pytest.approx(1 / 3)},
                                    {"true": "b", "predicted": "a", "count": 1, "rate": 1.0}]


def test_out_of_range_prediction_is_refused():
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix(torch.tensor([0]), torch.tensor([3]), 3)


def test_plot_is_written(tmp_path):
    path = plot_confusion(torch.tensor([[3, 1], [0, 4]]), ["x", "y"], tmp_path / "c.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_eval_writes_per_class_report_and_plot(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "mean per-class acc" in out
    result = json.loads((tiny_run / "eval_test.json").read_text())
    per_class, counts = result["per_class_acc"], result["per_class_n"]
    assert sum(counts.values()) == result["n"]
    # overall accuracy is the image-weighted mean of the per-class accuracies
    assert result["acc"] == pytest.approx(sum(per_class[c] * counts[c] for c in counts) / result["n"])
    assert sum(c["count"] for c in result["top_confusions"]) <= result["n"] * (1 - result["acc"]) + 1e-9
    assert (tiny_run / "confusion_test.png").stat().st_size > 2000
