"""The synthbirds generator: determinism, exact boxes, fine-grained classes, safe writes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat

from fgvc.data import cub, dogs, synthetic
from fgvc.errors import UserError


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", ["cub", "dogs"])
def test_same_seed_writes_identical_bytes(tmp_path, layout):
    a = synthetic.generate(tmp_path / "a", classes=3, per_class=4, size=40, seed=7, layout=layout)
    b = synthetic.generate(tmp_path / "b", classes=3, per_class=4, size=40, seed=7, layout=layout)
    da, db = _digests(a), _digests(b)
    assert len(da) > 12 and da == db  # the .mat lists and JSON marker included


def test_different_seed_draws_different_images(tmp_path):
    a = _digests(synthetic.generate(tmp_path / "a", classes=2, per_class=4, size=40, seed=0))
    b = _digests(synthetic.generate(tmp_path / "b", classes=2, per_class=4, size=40, seed=1))
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert jpgs and all(a[k] != b[k] for k in jpgs)


@pytest.mark.parametrize("c,k", [(0, 0), (1, 3), (5, 7), (9, 2), (12, 11), (3, 30)])
def test_box_is_exactly_where_the_bird_changes_the_scene(c, k):
    with_bird, box = synthetic.render_sample(c, k, 64, seed=3)
    without, box2 = synthetic.render_sample(c, k, 64, seed=3, bird=False)
    assert box == box2
    diff = (np.asarray(with_bird) != np.asarray(without)).any(-1)
    ys, xs = np.nonzero(diff)
    x, y, w, h = box
    # every changed pixel is inside the box, and the box is tight: changes reach all four sides
    assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h
    assert xs.min() <= x + 1 and xs.max() >= x + w - 2 and ys.min() <= y + 1 and ys.max() >= y + h - 2


def test_bird_fills_a_large_part_of_the_image():
    sides = [max(synthetic.render_sample(c, k, 64)[1][2:]) / 64 for c in range(4) for k in range(10)]
    assert 0.45 <= min(sides) and max(sides) <= 1.0 and np.mean(sides) > 0.6


def test_classes_are_fine_grained_and_distinct():
    codes = [synthetic.class_attributes(c) for c in range(synthetic.MAX_CLASSES)]
    keys = synthetic.ATTRIBUTES
    assert len({tuple(a[k] for k in keys) for a in codes}) == len(codes)
    for i, a in enumerate(codes[:20]):
        shared = [sum(a[k] == b[k] for k in keys) for j, b in enumerate(codes[:20]) if j != i]
        assert max(shared) >= 3, f"class {i} shares at most {max(shared)} of 6 attributes with any other"
        assert max(shared) <= 4  # two classes always differ in at least two attributes
    assert synthetic.class_attributes(3) == codes[3]  # a class is the same bird whatever else is asked


def test_class_names_read_like_cub(cub_root):
    lines = (cub_root / "CUB_200_2011" / "classes.txt").read_text().splitlines()
    assert lines[0] == f"1 001.{synthetic.class_name(0)}"
    assert all(re.fullmatch(r"\d+ \d{3}\.[A-Z][A-Za-z]*(_[A-Za-z]+)+", line) for line in lines)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    root = synthetic.generate(tmp_path / "d", classes=2, per_class=3, size=32, test_fraction=0.3)
    with pytest.raises(UserError, match="not empty.*overwrite"):
        synthetic.generate(root, classes=3, per_class=3, size=32, test_fraction=0.3)
    synthetic.generate(root, classes=3, per_class=3, size=32, test_fraction=0.3, overwrite=True)
    assert len(cub.load(root, "test").class_names) == 3


def test_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="refusing to delete"):
        synthetic.generate(tmp_path / "mine", classes=2, per_class=4, overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    real = synthetic._jpeg

    def flaky(img):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(img)

    monkeypatch.setattr(synthetic, "_jpeg", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "d", classes=2, per_class=4, size=32)
    assert list(tmp_path.iterdir()) == []


def test_dogs_layout_is_shaped_like_the_official_lists(dogs_root):
    mat = loadmat(str(dogs_root / "lists" / "train_list.mat"))
    assert mat["file_list"].shape == mat["annotation_list"].shape == mat["labels"].shape
    assert mat["file_list"].shape[1] == 1 and mat["file_list"].dtype == object
    first = mat["file_list"][0, 0][0]
    assert re.fullmatch(r"n\d{8}-[A-Za-z_]+/n\d{8}_\d+\.jpg", first)
    assert (dogs_root / "Images" / first).is_file()
    assert (dogs_root / "Annotation" / mat["annotation_list"][0, 0][0]).is_file()
    assert sorted(set(mat["labels"].ravel().tolist())) == [1.0, 2.0, 3.0]
    box = dogs.read_box(dogs_root / "Annotation" / mat["annotation_list"][0, 0][0])
    label, k = int(mat["labels"][0, 0]) - 1, int(first.rsplit("_", 1)[1][:-4]) - 1
    assert box == tuple(float(v) for v in synthetic.render_sample(label, k, 48)[1])


@pytest.mark.parametrize("kwargs,words", [
    ({"layout": "voc"}, "unknown layout"),
    ({"classes": 1}, "classes=1"),
    ({"classes": 201}, "classes=201"),
    ({"per_class": 2}, "train images per class"),
    ({"size": 16}, "too small"),
    ({"test_fraction": 1.0}, "test_fraction"),
])
def test_bad_arguments_are_user_errors(tmp_path, kwargs, words):
    with pytest.raises(UserError, match=words):
        synthetic.generate(tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()
