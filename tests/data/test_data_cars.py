"""Stanford Cars: the loader on tiny .mat files in the devkit layout; `prepare` explains where the files go."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from benchmark_layouts import CARS, save_annotations, write_cars

from fgvc.cli import main
from fgvc.data import build_dataset, cars, download, info
from fgvc.errors import UserError


@pytest.fixture(scope="module")
def car(tmp_path_factory) -> dict:
    return write_cars(tmp_path_factory.mktemp("cars"))


@pytest.fixture
def car_copy(car, tmp_path) -> dict:
    base = Path(shutil.copytree(car["base"], tmp_path / "c" / "stanford_cars"))
    return {**car, "base": base}


def _names(ds) -> set[str]:
    return {s.path.name for s in ds.samples}


def test_test_split_labels_names_and_boxes(car):
    test = build_dataset("cars", car["base"].parent, "test")
    assert test.name == "cars" and test.class_names == CARS
    assert _names(test) == set(car["test"]) and all(s.path.parent.name == "cars_test" for s in test.samples)
    test.return_boxes = True
    for i, s in enumerate(test.samples):
        label, (x1, y1, x2, y2) = car["test"][s.path.name]
        assert s.label == label and s.box == (x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1)
        assert torch.equal(test[i][2], torch.tensor([x1 - 1, y1 - 1, x2, y2], dtype=torch.float32))


def test_train_val_partition_the_official_train_set(car):
    train, val = (cars.load(car["base"], s, val_fraction=0.25, seed=1) for s in ("train", "val"))
    assert not _names(train) & _names(val) and _names(train) | _names(val) == set(car["train"])
    assert all(s.path.parent.name == "cars_train" for s in train.samples + val.samples)
    assert sorted(val.targets) == [0, 1, 2]
    assert all(s.label == car["train"][s.path.name][0] for s in train.samples)
    d = info.describe("cars", car["base"], check=True, val_fraction=0.25)
    assert d["splits"] == {"train": 9, "val": 3, "test": 6} and d["has_boxes"] and d["unreadable"] == []


def test_labelled_test_file_may_live_in_devkit(tmp_path, car):
    t = write_cars(tmp_path, test_labels_in="devkit")
    assert _names(cars.load(tmp_path, "test")) == set(t["test"]) == set(car["test"])


def test_unlabelled_devkit_test_file_is_not_enough(car_copy):
    base = car_copy["base"]
    (base / "cars_test_annos_withlabels.mat").unlink()
    save_annotations(base / "devkit" / "cars_test_annos.mat", [(1, 1, 5, 5, "00001.jpg")])  # no class field
    with pytest.raises(UserError, match=r"cars_test_annos_withlabels\.mat is in neither .* no labels"):
        cars.load(base, "train")
    save_annotations(base / "cars_test_annos_withlabels.mat", [(1, 1, 5, 5, "00001.jpg")])
    with pytest.raises(UserError, match=r"no field 'class'.*withlabels"):
        cars.load(base, "train")


BAD = {
    "class out of range": ([(1, 1, 5, 5, 4, "00001.jpg")], ["annotation 1 (00001.jpg)", "from 1 to 3"]),
    "box corners swapped": ([(9, 1, 5, 5, 1, "00001.jpg")], ["annotation 1", "bbox_x1 <= bbox_x2"]),
    "path outside": ([(1, 1, 5, 5, 1, "../x.jpg")], ["'../x.jpg'"]),
    "listed twice": ([(1, 1, 5, 5, 1, "00001.jpg")] * 2, ["annotations 1 and 2 both name 00001.jpg"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_broken_annotations_are_named(car_copy, case):
    rows, words = BAD[case]
    path = car_copy["base"] / "cars_test_annos_withlabels.mat"
    save_annotations(path, rows)
    with pytest.raises(UserError) as e:
        cars.load(car_copy["base"], "test")
    assert str(path) in str(e.value) and all(w in str(e.value) for w in words)


def test_not_a_mat_file_and_missing_image(car_copy):
    base = car_copy["base"]
    (base / "cars_test" / "00002.jpg").unlink()
    with pytest.raises(UserError, match=r"00002\.jpg listed in .* does not exist"):
        cars.load(base, "test")
    (base / "devkit" / "cars_meta.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match=r"cars_meta\.mat cannot be read as a MATLAB \.mat file"):
        cars.load(base, "test")


def test_wrong_roots_point_at_the_right_dataset(car, cub_root, tmp_path):
    with pytest.raises(UserError, match="Stanford Cars layout.*use dataset cars"):
        build_dataset("cub200", car["base"], "train")
    with pytest.raises(UserError, match="CUB-200-2011 layout"):
        cars.load(cub_root, "train")
    with pytest.raises(UserError, match=r"holds no devkit/cars_meta\.mat.*no official download"):
        cars.load(tmp_path, "train")


def test_prepare_says_where_to_put_the_files(car, tmp_path, capsys):
    assert main(["data", "prepare", "cars", "--root", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "no official download" in err and str(tmp_path / "d" / "stanford_cars") in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing created
    assert download.prepare("cars", car["base"].parent, progress=False) == car["base"].parent  # already there
