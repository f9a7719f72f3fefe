"""fgvc data audit, duplicates: planted near-duplicates are found, distinct generated images never pair,
--against finds a copy in another folder, and a run's test accuracy is recomputed without the duplicates."""

import csv
import json
from pathlib import Path

import pytest
from audit_helpers import SIZE, fake_run, folder_dataset, plant_variants, write_jpeg
from PIL import Image

from fgvc.audit.duplicates import find_duplicates
from fgvc.cli import main
from fgvc.data.synthetic import render_sample


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """4 classes x (6 train + 6 test) distinct birds, plus 3 near-duplicates of one train image of each of
    classes 0-2 planted in that class's test folder; returns (root, {planted test file: its train source})."""
    root = folder_dataset(tmp_path_factory.mktemp("audit") / "data", classes=4, train=6, test=6)
    expected = {}
    for c in range(3):
        source = root / "train" / f"c{c}" / f"{c:03d}.jpg"
        for path in plant_variants(source, root / "test" / f"c{c}").values():
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
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates"]["test_images_with_duplicate"] == len(expected)
    assert summary["audits"] == ["duplicates"] and "labels" not in summary
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
