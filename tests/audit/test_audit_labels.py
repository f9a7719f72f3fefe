"""fgvc data audit, labels: out-of-fold probe probabilities + cleanlab rank planted label flips far above
chance, and the CLI writes suspects with the dataset's own given class."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from audit_helpers import SIZE, colour_dataset

from fgvc.audit.labelnoise import oof_probabilities, rank_label_issues
from fgvc.cli import main


def _flip(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``fraction`` of them moved to another class; (noisy labels, indices flipped)."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, num_classes, size=len(flipped))) % num_classes
    return noisy, flipped


def test_planted_flips_ranked_far_above_chance():
    # 6 well-separated Gaussian classes in 16-d, 40 each; 10% of the labels flipped to another class
    rng = np.random.default_rng(0)
    classes, per_class, dim = 6, 40, 16
    means = rng.normal(0, 4, size=(classes, dim))
    true = np.repeat(np.arange(classes), per_class)
    features = torch.tensor(means[true] + rng.normal(0, 1, size=(len(true), dim)), dtype=torch.float32)
    noisy, flipped = _flip(true, 0.10, classes, seed=1)
    probs = oof_probabilities(features, noisy, classes, folds=5)
    assert probs.shape == (len(true), classes) and np.allclose(probs.sum(1), 1)
    flagged, scores = rank_label_issues(noisy, probs)
    top = set(np.argsort(scores)[:len(flipped)].tolist())
    # chance would put 10% of the flips in the top 24; the audit puts nearly all of them there
    assert len(top & set(flipped.tolist())) >= 0.9 * len(flipped)
    assert len(set(flagged.tolist()) & set(flipped.tolist())) >= 0.9 * len(flipped)
    assert len(flagged) <= 2 * len(flipped)
    # the suggested class of a flipped image is its true class
    assert (probs[flipped].argmax(1) == true[flipped]).mean() >= 0.9


@pytest.fixture(scope="module")
def noisy_folder(tmp_path_factory):
    """4 colour-coded classes x 12 train images; one image of each class moved into the next class's folder."""
    root = colour_dataset(tmp_path_factory.mktemp("labels") / "data", classes=4, train=12, test=2)
    moved = {}
    for c in range(4):
        src = root / "train" / f"c{c}" / "000.jpg"
        dest = root / "train" / f"c{(c + 1) % 4}" / f"moved_from_c{c}.jpg"
        src.rename(dest)
        moved[dest.resolve()] = f"c{c}"
    return root, moved


def test_cli_label_audit_writes_suspects_with_given_and_suggested_class(noisy_folder, tmp_path):
    from safetensors.torch import save_file

    from fgvc.models import create_model

    root, moved = noisy_folder
    torch.manual_seed(0)
    weights = tmp_path / "backbone.safetensors"  # a random tiny backbone stands in for pretrained weights
    save_file({k: v.contiguous() for k, v in create_model("test_resnet", 7).net.state_dict().items()}, str(weights))
    out = tmp_path / "out"
    assert main(["data", "audit", "folder", "--root", str(root), "--model", "test_resnet", "--weights", str(weights),
                 "--image-size", str(SIZE), "--folds", "4", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["audits"] == ["duplicates", "labels"]
    assert summary["labels"]["images"] == 48 and summary["labels"]["folds"] == 4
    with open(out / "suspects.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and (out / "suspects.png").is_file()
    for r in rows:  # the given class is the folder the image sits in, the suggestion another class
        assert r["given"] == Path(r["path"]).parent.name and r["suggested"] != r["given"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)
    # chance would put 1/3 of a moved image in the top 4 (4 of 48); the audit ranks exactly them there,
    # each with the class it came from as the suggestion
    assert {Path(r["path"]).resolve(): r["suggested"] for r in rows[:len(moved)]} == moved
    assert len(rows) <= 2 * len(moved)


def test_label_audit_takes_features_from_a_run(noisy_folder, tmp_path):
    from audit_helpers import fake_run

    root, moved = noisy_folder
    run = fake_run(tmp_path / "run", num_classes=4, image_size=SIZE)  # its (random, seeded) backbone
    out = tmp_path / "out"
    assert main(["data", "audit", "folder", "--root", str(root), "--run", str(run), "--what", "labels",
                 "--folds", "4", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"]["features"] == f"run {run}" and "duplicates" not in summary
    with open(out / "suspects.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {Path(r["path"]).resolve(): r["suggested"] for r in rows[:len(moved)]} == moved
