"""The image-folder loader: root/{train,val,test}/<class>/*."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fgvc.data import build_dataset, folder
from fgvc.errors import UserError


def _tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """Write tiny PNGs: layout = {split: {class: count}}."""
    for split, classes in layout.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / split / name / f"{i}.png")
    return root


def test_classes_are_the_sorted_union_of_all_splits(tmp_path):
    root = _tree(tmp_path, {"train": {"wren": 3, "finch": 3}, "test": {"finch": 2, "wren": 1}})
    (root / "test" / "sparrow").mkdir()
    Image.new("RGB", (8, 8)).save(root / "test" / "sparrow" / "a.jpg")
    with pytest.raises(UserError, match="sparrow.*no train images"):
        folder.load(root, "test")
    (root / "train" / "sparrow").mkdir()
    Image.new("RGB", (8, 8)).save(root / "train" / "sparrow" / "b.jpg")
    Image.new("RGB", (8, 8)).save(root / "train" / "sparrow" / "c.jpg")
    test = folder.load(root, "test")
    assert test.class_names == ["finch", "sparrow", "wren"]
    assert sorted((s.path.parent.name, s.label) for s in test.samples) == [
        ("finch", 0), ("finch", 0), ("sparrow", 1), ("wren", 2)]


def test_non_image_and_hidden_files_are_ignored(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    for junk in ("notes.txt", ".DS_Store", "labels.csv", ".hidden.png"):
        (root / "train" / "a" / junk).write_text("x")
    (root / "train" / "a" / "nested").mkdir()
    Image.new("RGB", (8, 8)).save(root / "train" / "a" / "nested" / "deep.JPG")
    ds = folder.load(root, "train", val_fraction=0.0)
    assert sorted(p.name for p in (s.path for s in ds.samples)) == ["0.png", "0.png", "1.png", "1.png", "deep.JPG"]


def test_val_is_carved_from_train_when_absent(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 10, "b": 10}, "test": {"a": 2, "b": 2}})
    train, val = folder.load(root, "train", val_fraction=0.2), folder.load(root, "val", val_fraction=0.2)
    assert len(val) == 4 and sorted(val.targets) == [0, 0, 1, 1]
    assert not {s.path for s in train.samples} & {s.path for s in val.samples}
    assert len(train) + len(val) == 20


def test_val_folder_is_used_as_is_when_present(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 4, "b": 4}, "val": {"a": 1, "b": 2}, "test": {"a": 1, "b": 1}})
    val = build_dataset("folder", root, "val", val_fraction=0.5)
    assert all(s.path.parent.parent.name == "val" for s in val.samples) and len(val) == 3
    assert len(folder.load(root, "train", val_fraction=0.5)) == 8


def test_empty_class_folder_is_refused(tmp_path):
    root = _tree(tmp_path, {"train": {"a": 2}, "test": {"a": 1}})
    (root / "train" / "b").mkdir()
    (root / "train" / "b" / "readme.txt").write_text("todo")
    with pytest.raises(UserError, match=r"class folder .*train/b holds no images"):
        folder.load(root, "train")


def test_wrong_layouts_say_what_was_expected(tmp_path, cub_root):
    root = _tree(tmp_path / "ok", {"train": {"a": 2}, "test": {"a": 1}})
    with pytest.raises(UserError, match="one split's folder; pass its parent"):
        folder.load(root / "train", "train")
    flat = _tree(tmp_path / "flat", {"x": {"a": 1}})
    with pytest.raises(UserError, match="class folders but no train/"):
        folder.load(flat / "x", "train")
    Image.new("RGB", (8, 8)).save(root / "train" / "stray.jpg")
    with pytest.raises(UserError, match="stray.jpg lies directly in"):
        folder.load(root, "train")
    with pytest.raises(UserError, match="CUB-200-2011 layout"):
        folder.load(cub_root, "train")
    no_test = _tree(tmp_path / "nt", {"train": {"a": 2}})
    assert len(folder.load(no_test, "train", val_fraction=0.0)) == 2
    with pytest.raises(UserError, match="test does not exist"):
        folder.load(no_test, "test")
