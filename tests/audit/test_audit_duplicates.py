"""fgvc data audit, duplicates: planted near-duplicates are found, distinct generated images never pair,
--against finds a copy in another folder, and a run's test accuracy is recomputed without the duplicates."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from audit_helpers import SIZE, fake_run, folder_dataset, plant_variants, write_jpeg
from PIL import Image

from fgvc.audit.duplicates import find_duplicates
from fgvc.cli import main
from fgvc.data.synthetic import render_sample

CROSS = {2: 3}  # the copies of class 2's image sit in class 3's test folder: a leak and a label error


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """4 classes x (6 train + 6 test) distinct birds, plus 3 near-duplicates of one train image of each of
    classes 0-2 planted in a test folder: that class's own for classes 0 and 1, class 3's for class 2
    (``CROSS``); returns (root, {planted test file: its train source})."""
    root = folder_dataset(tmp_path_factory.mktemp("audit") / "data", classes=4, train=6, test=6)
    expected = {}
    for c in range(3):
        source = root / "train" / f"c{c}" / f"{c:03d}.jpg"
        for path in plant_variants(source, root / "test" / f"c{CROSS.get(c, c)}").values():
            expected[path.resolve()] = source.resolve()
    return root, expected


def _pairs(out: Path) -> list[dict]:
    with open(out / "pairs.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_planted_duplicates_found_and_nothing_else(planted, tmp_path):
    root, expected = planted
    out = tmp_path / "out"
    assert main(["data", "audit", "folder", "--root", str(root), "--out", str(out), "--quiet"]) == 0
    pairs = _pairs(out)
    leaks = [p for p in pairs if p["kind"] == "train-test"]
    found = {Path(p["image"]).resolve(): Path(p["match"]).resolve() for p in leaks}
    assert found == expected and len(leaks) == len(expected)  # resized, JPEG 30, 3% crop of 3 train images
    assert all(p["split"] == "test" and int(p["distance"]) <= 20 for p in pairs)
    # the three copies of one source are also near-duplicates of each other, within the test split;
    # no other pair: distinct generated images never pair
    within = {frozenset((Path(p["image"]).resolve(), Path(p["match"]).resolve())) for p in pairs
              if p["kind"] == "test-test"}
    assert within == {frozenset((a, b)) for a in expected for b in expected if a != b and expected[a] == expected[b]}
    assert len(pairs) == len(leaks) + 9
    # the copies in another class than their source: found like the others, and counted as label errors
    crossed = [p for p in leaks if p["label"] != p["match_label"]]
    assert sorted((p["label"], p["match_label"]) for p in crossed) == [("c3", "c2")] * 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates"]["cross_class_pairs"] == 3
    assert summary["duplicates"]["test_images_with_duplicate"] == len(expected)
    assert summary["audits"] == ["duplicates"] and "labels" not in summary
    assert summary["duplicates"]["detectors"] == ["hash"] and all(p["detector"] == "hash" for p in pairs)
    assert Image.open(out / "pairs.png").size[0] > 200
    assert str(next(iter(expected))) in (out / "pairs.md").read_text()


def test_no_false_pair_among_distinct_generated_birds(synthbirds_root):
    # 8 classes x 80 generated birds (320 train, 320 test): classes differ mostly in colour, the hard case
    found = find_duplicates("synthbirds", synthbirds_root)
    assert found["pairs"] == []
    assert found["counts"] == {"train": 320, "test": 320}


def test_against_finds_a_planted_copy_in_another_folder(planted, tmp_path):
    root, _ = planted
    other = tmp_path / "pretraining"
    for k in range(8):  # distinct birds of classes the dataset does not have
        write_jpeg(render_sample(6 + k % 2, k, SIZE, seed=5)[0], other / "birds" / f"{k}.jpg")
    leaked = root / "test" / "c3" / "009.jpg"
    write_jpeg(Image.open(leaked).convert("RGB"), other / "copy.jpg", quality=50)
    out = tmp_path / "out"
    assert main(["data", "audit", "folder", "--root", str(root), "--against", str(other), "--out", str(out),
                 "--quiet"]) == 0
    against = [p for p in _pairs(out) if p["kind"] == "against"]
    assert [(Path(p["image"]).resolve(), Path(p["match"]).resolve(), p["split"]) for p in against] == [
        (leaked.resolve(), (other / "copy.jpg").resolve(), "test")]
    assert json.loads((out / "summary.json").read_text())["duplicates"]["counts"][str(other)] == 9


def test_run_accuracy_recomputed_without_duplicated_test_images(planted, tmp_path):
    import torch

    from fgvc import api, runs
    from fgvc.data import build_dataset
    from fgvc.data.transforms import eval_transform

    root, expected = planted
    tiny_run = fake_run(tmp_path / "run", num_classes=4)
    out = tmp_path / "out"
    assert main(["data", "audit", "folder", "--root", str(root), "--run", str(tiny_run), "--what", "duplicates",
                 "--out", str(out), "--quiet"]) == 0
    acc = json.loads((out / "summary.json").read_text())["duplicates"]["accuracy"]
    test = build_dataset("folder", root, "test", eval_transform(runs.load_config(tiny_run).data.image_size))
    model, _ = api.load(tiny_run)
    with torch.no_grad():
        correct = [int(model(x[None]).argmax(1)) == y for x, y in test]
    kept = [ok for ok, s in zip(correct, test.samples) if s.path.resolve() not in expected]
    assert acc["test_images"] == len(test) and acc["duplicated_test_images"] == len(expected)
    assert acc["test_images_without_duplicates"] == len(test) - len(expected) == len(kept)
    assert acc["test_acc"] == pytest.approx(sum(correct) / len(correct))
    assert acc["test_acc_without_duplicates"] == pytest.approx(sum(kept) / len(kept))


def test_threshold_boundary_is_inclusive_through_the_cli(planted, tmp_path):
    # the farthest planted leak sits at d bits: --threshold d still finds it, --threshold d - 1 does not,
    # and every closer leak stays
    root, expected = planted

    def leaks(threshold):
        out = tmp_path / f"t{threshold}"
        assert main(["data", "audit", "folder", "--root", str(root), "--threshold", str(threshold), "--out",
                     str(out), "--quiet"]) == 0
        return {Path(p["image"]).resolve(): int(p["distance"]) for p in _pairs(out) if p["kind"] == "train-test"}

    at_default = leaks(20)
    d = max(at_default.values())
    farthest = {k for k, v in at_default.items() if v == d}
    assert 0 < d <= 20 and len(farthest) < len(expected)
    assert leaks(d) == at_default
    assert leaks(d - 1) == {k: v for k, v in at_default.items() if k not in farthest}


def test_close_pairs_counts_exactly_threshold_bits_as_a_pair():
    from fgvc.audit.duplicates import close_pairs

    a = np.zeros((1, 192), dtype=bool)
    b = np.zeros((3, 192), dtype=bool)
    b[0, :19], b[1, :20], b[2, :21] = True, True, True  # 19, 20 and 21 bits from a
    assert close_pairs(a, b, 20) == [(0, 0, 19), (0, 1, 20)]
    assert close_pairs(a, b, 19) == [(0, 0, 19)]
    assert close_pairs(a, b, 21) == [(0, 0, 19), (0, 1, 20), (0, 2, 21)]
