"""Broken annotation files (CUB .txt, Stanford Dogs .mat and VOC XML): handled, or one sentence naming the
file (and line); a fuzz test feeds the parsers random input and accepts nothing but UserError."""

from __future__ import annotations

import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.io import loadmat, savemat

from fgvc.data import cub, dogs
from fgvc.errors import UserError

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _set_line(path: Path, n: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[n - 1] = text
    path.write_text("\n".join(lines) + "\n")


# --- CUB text files ---

@pytest.mark.parametrize("line, words", [
    ("1 1e999 2 3 4", "line 1"),  # an infinite x
    ("1 2 3 inf 4", "line 1"),
    ("1 2 3 nan 4", "line 1"),
])
def test_a_non_finite_box_names_the_line(cub_copy, line, words):
    _set_line(cub_copy / "CUB_200_2011" / "bounding_boxes.txt", 1, line)
    with pytest.raises(UserError, match=rf"bounding_boxes\.txt {words}"):
        cub.load(cub_copy, "train")


@pytest.mark.parametrize("path", ["/etc/passwd", "../../outside.jpg", "001.a/../../../x.jpg", "C:/x.jpg",
                                  "C:\\\\Windows\\\\x.jpg"])
def test_an_image_path_outside_the_dataset_is_refused(cub_copy, path):
    _set_line(cub_copy / "CUB_200_2011" / "images.txt", 2, f"2 {path}")
    with pytest.raises(UserError, match=r"images\.txt line 2: image path .* must be relative"):
        cub.load(cub_copy, "train")


def test_wrong_encoding_names_the_file_and_line(cub_copy):
    path = cub_copy / "CUB_200_2011" / "classes.txt"
    path.write_bytes(path.read_bytes().replace(b"\n", "\nCaf\u00e9 \n".encode("latin-1"), 1)[:-1] + b"\n")
    with pytest.raises(UserError, match=r"classes\.txt is not UTF-8 text \(line 2"):
        cub.load(cub_copy, "train")


def test_a_huge_malformed_line_is_shown_shortened(cub_copy):
    _set_line(cub_copy / "CUB_200_2011" / "image_class_labels.txt", 3, "x" * 100_000)
    with pytest.raises(UserError, match=r"image_class_labels\.txt line 3") as e:
        cub.load(cub_copy, "train")
    assert len(str(e.value)) < 400


def test_old_mac_line_endings_load_the_same(cub_root, cub_copy):
    for p in (cub_copy / "CUB_200_2011").glob("*.txt"):
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r"))
    a, b = cub.load(cub_root, "train"), cub.load(cub_copy, "train")
    assert [(s.image_id, s.label, s.box) for s in a.samples] == [(s.image_id, s.label, s.box) for s in b.samples]


_TOKENS = st.sampled_from(["1", "2", "3", "0", "-1", "12", "001.A", "a/b.jpg", "1.5", "nan", "inf", "1e999",
                           "999999999999999999999", "", " ", "\t", "x", "/abs.jpg", "../up.jpg", "\u00e9", "\x00"])
_LINES = st.lists(st.lists(_TOKENS, max_size=6).map(" ".join), max_size=12).map("\n".join)
_CONTENT = st.one_of(_LINES.map(lambda s: s.encode("utf-8")), st.binary(max_size=200),
                     st.text(string.printable, max_size=200).map(str.encode))


@FUZZ
@given(name=st.sampled_from([*cub.REQUIRED, "bounding_boxes.txt"]), content=_CONTENT,
       split=st.sampled_from(["train", "val", "test"]))
def test_fuzz_cub_annotation_files_give_only_user_errors(cub_root, name, content, split):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "c"
        shutil.copytree(cub_root, root)
        (root / "CUB_200_2011" / name).write_bytes(content)
        try:
            cub.load(root, split)
        except UserError as e:
            assert "\n" not in str(e)


# --- Stanford Dogs .mat lists and VOC XML ---

def test_a_list_entry_outside_the_dataset_is_refused(dogs_copy):
    path = dogs_copy / "lists" / "train_list.mat"
    mat = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    files = mat["file_list"].copy()
    files[0, 0] = np.array([files[0, 0][0].split("/")[0] + "/../../../../etc/passwd"])
    savemat(str(path), {**mat, "file_list": files})
    with pytest.raises(UserError, match=r"train_list\.mat: entry 1 path .* must be relative"):
        dogs.load(dogs_copy, "train")


@pytest.mark.parametrize("labels", [np.array([["a"], ["b"]], dtype=object), np.array([[1 + 2j]]),
                                    np.array([[np.inf]]), np.array([[2.5]])])
def test_labels_that_are_not_class_numbers_name_the_entry(dogs_copy, labels):
    path = dogs_copy / "lists" / "train_list.mat"
    mat = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    n = len(labels)
    savemat(str(path), {"file_list": mat["file_list"][:n], "annotation_list": mat["annotation_list"][:n],
                        "labels": labels})
    with pytest.raises(UserError, match=r"train_list\.mat: label .* of entry 1 .* is not a 1-based class number"):
        dogs.load(dogs_copy, "train")


def _voc(box=("4", "5", "20", "30")) -> str:
    x0, y0, x1, y1 = box
    return (f"<annotation><object><name>dog</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object></annotation>")


@pytest.mark.parametrize("text, words", [
    (_voc(("4", "5", "inf", "30")), "is not a box"),
    (_voc(("4", "5", "3", "30")), "is not a box"),
    (_voc(("4", "", "20", "30")), "not valid VOC XML"),
    ("<annotation><object><bndbox><xmin>4", "not valid VOC XML"),
])
def test_bad_voc_xml_is_one_sentence_naming_the_file(tmp_path, text, words):
    path = tmp_path / "n0001_1"
    path.write_text(text)
    with pytest.raises(UserError, match=words) as e:
        dogs.read_box(path)
    assert "n0001_1" in str(e.value) and len(str(e.value)) < 500


def test_an_entity_expansion_bomb_is_refused(tmp_path):
    # "billion laughs": 10^10 characters if expanded; the parser stops it instead of filling the memory
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {c} "{("&" + prev + ";") * 10}">' for c, prev in zip("bcdefghij", "abcdefghi"))
    path = tmp_path / "n0001_1"
    path.write_text(f'<?xml version="1.0"?><!DOCTYPE annotation [{entities}]><annotation>&j;</annotation>')
    with pytest.raises(UserError, match=r"n0001_1 is not valid VOC XML \(limit on input amplification"):
        dogs.read_box(path)


_MAT_VALUES = st.one_of(
    st.lists(st.text(string.ascii_letters + "/-_.", max_size=12), max_size=4).map(
        lambda xs: np.array([[np.array([x], dtype=object)] for x in xs], dtype=object).reshape(-1, 1)
        if xs else np.zeros((0, 1))),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4).map(lambda xs: np.array(xs).reshape(-1, 1)),
    st.lists(st.integers(-3, 5), max_size=4).map(lambda xs: np.array(xs, dtype=np.int64).reshape(-1, 1)),
    st.text(max_size=8),
    st.just(np.zeros((2, 2, 2))),
)


@FUZZ
@given(data=st.one_of(st.binary(max_size=300),
                      st.dictionaries(st.sampled_from([*dogs.KEYS, "other"]), _MAT_VALUES, max_size=4)))
def test_fuzz_dogs_lists_give_only_user_errors(dogs_root, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "d"
        shutil.copytree(dogs_root, root)
        path = root / "lists" / "train_list.mat"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            try:
                savemat(str(path), data)
            except (ValueError, TypeError):  # scipy cannot write every structure; nothing to test then
                return
        try:
            dogs.load(root, "train")
        except UserError as e:
            assert "\n" not in str(e)


_XML_TEXT = st.one_of(
    st.text(max_size=200),
    st.tuples(*[st.sampled_from(["0", "4", "-1", "1e999", "nan", "", "x", "30", "3.5"])] * 4).map(_voc),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


@FUZZ
@given(text=_XML_TEXT)
def test_fuzz_voc_annotations_give_only_user_errors(tmp_path, text):
    path = tmp_path / "n0001_1"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        box = dogs.read_box(path)
    except UserError as e:
        assert "\n" not in str(e)
    else:
        assert box is None or all(np.isfinite(box)) and box[2] > 0 and box[3] > 0
