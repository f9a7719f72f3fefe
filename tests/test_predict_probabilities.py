"""fgvc predict's classes and probabilities are the run's model's own: its argmax and its softmax."""

import pytest
import torch

import fgvc
from fgvc import runs
from fgvc.data.transforms import load_eval_image
from fgvc.predict import predict_files


def test_predictions_are_the_softmax_of_the_runs_logits(tiny_run, tiny_synthbirds_root):
    images = sorted((tiny_synthbirds_root / "CUB_200_2011" / "images").rglob("*.jpg"))[::9][:3]
    model, class_names = fgvc.load(tiny_run)
    size = runs.load_config(tiny_run).data.image_size
    results = predict_files(tiny_run, images, topk=len(class_names))
    assert [r["image"] for r in results] == [str(p) for p in images]
    for path, result in zip(images, results):
        with torch.no_grad():
            probs = model(load_eval_image(path, size))[0].softmax(-1)
        top = result["top"]
        assert top[0]["index"] == int(probs.argmax())
        assert [t["class"] for t in top] == [class_names[t["index"]] for t in top]
        assert sorted(t["index"] for t in top) == list(range(len(class_names)))
        for t in top:
            assert t["prob"] == pytest.approx(float(probs[t["index"]]), abs=2e-6)
        assert probs.max() - probs.min() > 1e-3  # the classes are told apart, so a reversed order shows
