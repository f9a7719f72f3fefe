"""The CUB-200-2011 loader on generated data in the official layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from data_helpers import SIZE

from fgvc.data import build_dataset, cub, synthetic
from fgvc.data.transforms import eval_transform
from fgvc.errors import UserError

# birds50 (`fgvc data birds50`), real photographs: the test runs when FGVC_BIRDS50 names its root
BIRDS50 = Path(os.environ.get("FGVC_BIRDS50") or "/nonexistent")


def _table(path: Path) -> dict[int, str]:
    return {int(a): b for a, b in (line.split(" ", 1) for line in path.read_text().splitlines())}


def test_official_ids_labels_names_and_test_split(cub_root):
    base = cub_root / "CUB_200_2011"
    images, labels = _table(base / "images.txt"), _table(base / "image_class_labels.txt")
    is_train, classes = _table(base / "train_test_split.txt"), _table(base / "classes.txt")
    test = cub.load(cub_root, "test")
    assert test.class_names == [classes[k] for k in sorted(classes)]
    assert [s.image_id for s in test.samples] == sorted(i for i in images if is_train[i] == "0")
    for s in test.samples:
        assert s.path == base / "images" / images[s.image_id]
        assert s.label == int(labels[s.image_id]) - 1
        assert test.class_names[s.label] == images[s.image_id].split("/")[0]


def test_root_may_be_the_cub_folder_itself(cub_root):
    a = cub.load(cub_root, "train")
    b = cub.load(cub_root / "CUB_200_2011", "train")
    assert a.samples == b.samples and a.class_names == b.class_names


def test_val_is_stratified_disjoint_from_train_and_seeded(cub_root):
    train, val = cub.load(cub_root, "train", val_fraction=0.2), cub.load(cub_root, "val", val_fraction=0.2)
    official = {i for i, v in _table(cub_root / "CUB_200_2011" / "train_test_split.txt").items() if v == "1"}
    ids_t, ids_v = {s.image_id for s in train.samples}, {s.image_id for s in val.samples}
    assert not ids_t & ids_v
    assert ids_t | ids_v == official
    assert set(val.targets) == set(range(len(val.class_names)))  # every class validated
    other = cub.load(cub_root, "val", val_fraction=0.2, seed=1)
    assert {s.image_id for s in other.samples} != ids_v
    assert cub.load(cub_root, "val", val_fraction=0.2).samples == val.samples


def test_test_split_ignores_val_fraction_and_seed(cub_root):
    a = cub.load(cub_root, "test", val_fraction=0.0, seed=0)
    b = cub.load(cub_root, "test", val_fraction=0.3, seed=5)
    assert a.samples == b.samples


def test_boxes_move_with_the_image_through_eval_transform(cub_root):
    ds = build_dataset("synthbirds", cub_root, "test", eval_transform(32))
    ds.return_boxes = True
    resized = round(32 / 0.875)  # eval_transform: short side to 37 px, then centre crop 32
    scale, offset = resized / SIZE, round((resized - 32) / 2)
    for i in range(3):
        image, label, box = ds[i]
        x, y, w, h = ds.samples[i].box
        expected = torch.tensor([x, y, x + w, y + h]) * scale - offset
        assert image.shape == (3, 32, 32) and label == ds.samples[i].label
        assert torch.allclose(box, expected.clamp(0, 32), atol=1e-3)


def test_boxes_are_the_generated_ones(cub_root):
    ds = cub.load(cub_root, "train", val_fraction=0.0)
    assert ds.has_boxes
    for s in ds.samples[:4]:
        k = int(s.path.stem.rsplit("_", 1)[1]) - 1
        _, box = synthetic.render_sample(s.label, k, SIZE, seed=0)
        assert s.box == tuple(float(v) for v in box)


def test_missing_bounding_boxes_gives_no_boxes(cub_copy):
    (cub_copy / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    ds = cub.load(cub_copy, "test")
    ds.return_boxes = True
    assert not ds.has_boxes and torch.isnan(ds[0][2]).all()


def test_windows_line_endings_and_bom_load_the_same(cub_root, cub_copy):
    for p in (cub_copy / "CUB_200_2011").glob("*.txt"):
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n"))
    a, b = cub.load(cub_root, "train"), cub.load(cub_copy, "train")
    assert [(s.image_id, s.label, s.box) for s in a.samples] == [(s.image_id, s.label, s.box) for s in b.samples]
    assert a.class_names == b.class_names


def test_images_are_not_decoded_at_load_time(cub_root, monkeypatch):
    import PIL.Image

    def refuse(*a, **k):
        raise AssertionError("decoded at load time")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    assert len(cub.load(cub_root, "train")) > 0


def _edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def _set_line(n: int, text: str):
    return lambda lines: lines[:n] + [text] + lines[n + 1:]


BAD = {
    # name: (file to edit, edit, words the error must contain)
    "malformed line": ("images.txt", _set_line(2, "3"), ["images.txt line 3", "<image_id>"]),
    "non-integer id": ("image_class_labels.txt", _set_line(0, "one 1"), ["image_class_labels.txt line 1"]),
    "split not 0/1": ("train_test_split.txt", _set_line(1, "2 7"), ["train_test_split.txt line 2", "0/1"]),
    "duplicate id": ("images.txt", lambda ls: ls + [ls[0]], ["images.txt line 41", "line 1"]),
    "id missing": ("image_class_labels.txt", lambda ls: ls[1:], ["image id 1", "image_class_labels.txt"]),
    "extra id": ("train_test_split.txt", lambda ls: ls + ["99 1"], ["train_test_split.txt line 41", "99"]),
    "unknown class": ("image_class_labels.txt", _set_line(0, "1 9"), ["image_class_labels.txt line 1", "class id 9"]),
    "bad box": ("bounding_boxes.txt", _set_line(0, "1 3 4 -5 6"), ["bounding_boxes.txt line 1", "width"]),
    "box missing": ("bounding_boxes.txt", lambda ls: ls[:-1], ["image id 40", "bounding_boxes.txt"]),
    "no train images": ("train_test_split.txt",
                        lambda ls: [f"{i} 0" if int(i) <= 10 else f"{i} {v}" for i, v in (x.split() for x in ls)],
                        ["no train images", "001."]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_user_error_naming_the_file(cub_copy, case):
    name, edit, words = BAD[case]
    _edit(cub_copy / "CUB_200_2011" / name, edit)
    with pytest.raises(UserError) as e:
        cub.load(cub_copy, "train")
    for w in words:
        assert w in str(e.value)


def test_missing_file_is_named(cub_copy):
    (cub_copy / "CUB_200_2011" / "classes.txt").unlink()
    with pytest.raises(UserError, match=r"classes\.txt is missing"):
        cub.load(cub_copy, "train")


def test_missing_image_is_named(cub_copy):
    s = cub.load(cub_copy, "test").samples[0]
    s.path.unlink()
    with pytest.raises(UserError, match=s.path.name):
        cub.load(cub_copy, "test")


def test_not_utf8_is_named(cub_copy):
    (cub_copy / "CUB_200_2011" / "classes.txt").write_bytes(b"1 001.\xff\xfe\n")
    with pytest.raises(UserError, match=r"classes\.txt is not UTF-8"):
        cub.load(cub_copy, "train")


def test_wrong_folders_say_what_was_expected(cub_root, dogs_root, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        cub.load(tmp_path / "nowhere", "train")
    with pytest.raises(UserError, match="images/ folder.*parent"):
        cub.load(cub_root / "CUB_200_2011" / "images", "train")
    with pytest.raises(UserError, match="Stanford Dogs layout"):
        cub.load(dogs_root, "train")
    with pytest.raises(UserError, match="CUB_200_2011/images.txt"):
        cub.load(tmp_path, "train")


def test_unknown_split_is_refused(cub_root):
    with pytest.raises(UserError, match="unknown split 'validation'"):
        cub.load(cub_root, "validation")


@pytest.mark.skipif(not BIRDS50.is_dir(), reason="FGVC_BIRDS50 does not name the birds50 folder")
def test_birds50_loads_with_official_split_and_no_boxes():
    train, val = cub.load(BIRDS50, "train"), cub.load(BIRDS50, "val")
    test = cub.load(BIRDS50, "test")
    assert len(train.class_names) == 50 and not train.has_boxes
    assert len(train) + len(val) + len(test) == 2952
    assert test.class_names[0] == "001.Black_footed_Albatross"
