"""The Stanford Dogs loader on generated data in the official layout."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from data_helpers import SIZE
from scipy.io import loadmat, savemat

from fgvc.data import build_dataset, dogs, synthetic
from fgvc.data.base import readable_name
from fgvc.data.transforms import eval_transform
from fgvc.errors import UserError


def _official(root, split):
    mat = loadmat(str(root / "lists" / f"{split}_list.mat"))
    return [(f[0][0], int(lab)) for f, lab in zip(mat["file_list"], mat["labels"].ravel())]


def test_labels_paths_and_class_names_follow_the_lists(dogs_root):
    test = dogs.load(dogs_root, "test")
    rows = _official(dogs_root, "test")
    assert [(str(s.path.relative_to(dogs_root / "Images")), s.label + 1) for s in test.samples] == rows
    folders = sorted(p.name for p in (dogs_root / "Images").iterdir())
    assert test.class_names == folders  # labels 1..3 are the folders n00000001.. in order
    assert readable_name(test.class_names[0]) == synthetic.class_name(0).replace("_", " ")


def test_readable_name_strips_the_wordnet_id():
    assert readable_name("n02085620-Chihuahua") == "Chihuahua"
    assert readable_name("n02085782-Japanese_spaniel") == "Japanese spaniel"
    assert readable_name("001.Black_footed_Albatross") == "Black footed Albatross"


def test_val_comes_from_the_train_list_only(dogs_root):
    train, val = dogs.load(dogs_root, "train", val_fraction=0.25), dogs.load(dogs_root, "val", val_fraction=0.25)
    official = {f for f, _ in _official(dogs_root, "train")}
    got_t = {str(s.path.relative_to(dogs_root / "Images")) for s in train.samples}
    got_v = {str(s.path.relative_to(dogs_root / "Images")) for s in val.samples}
    assert not got_t & got_v and got_t | got_v == official
    assert sorted(set(val.targets)) == [0, 1, 2]


def test_boxes_come_from_the_annotation_xml_and_follow_the_image(dogs_root):
    ds = build_dataset("synthdogs", dogs_root, "train", eval_transform(SIZE), val_fraction=0.0)
    assert ds.has_boxes
    s = ds.samples[0]
    k = int(s.path.stem.rsplit("_", 1)[1]) - 1
    assert s.box == tuple(float(v) for v in synthetic.render_sample(s.label, k, SIZE)[1])
    ds.return_boxes = True
    _, _, box = ds[0]
    resized = round(SIZE / 0.875)
    x, y, w, h = s.box
    expected = (torch.tensor([x, y, x + w, y + h]) * resized / SIZE - round((resized - SIZE) / 2)).clamp(0, SIZE)
    assert torch.allclose(box, expected, atol=1e-3)


def test_missing_annotation_gives_no_box(dogs_copy):
    first = dogs.load(dogs_copy, "test").samples[0]
    rel = first.path.relative_to(dogs_copy / "Images").with_suffix("")
    (dogs_copy / "Annotation" / rel).unlink()
    samples = dogs.load(dogs_copy, "test").samples
    assert samples[0].box is None and samples[1].box is not None


def test_dataset_folder_may_sit_inside_root_with_flat_lists(dogs_root, tmp_path):
    base = tmp_path / "data" / dogs.FOLDER
    shutil.copytree(dogs_root, base)
    for p in (base / "lists").iterdir():  # the official lists.tar extracts the .mat files flat
        p.rename(base / p.name)
    (base / "lists").rmdir()
    assert dogs.load(tmp_path / "data", "test").samples[0].path.is_file()


def _rewrite(path, **changes):
    mat = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    mat.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del mat[k]
    savemat(str(path), mat)


def test_bad_inputs_name_the_file(dogs_copy, dogs_root, cub_root, tmp_path):
    lists = dogs_copy / "lists"
    _rewrite(lists / "train_list.mat", labels=None)
    with pytest.raises(UserError, match=r"train_list\.mat has no key 'labels'"):
        dogs.load(dogs_copy, "train")
    (lists / "train_list.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(UserError, match=r"train_list\.mat cannot be read"):
        dogs.load(dogs_copy, "train")
    (lists / "train_list.mat").unlink()
    with pytest.raises(UserError, match="no lists/train_list.mat"):
        dogs.load(dogs_copy, "train")
    with pytest.raises(UserError, match="CUB-200-2011 layout"):
        dogs.load(cub_root, "train")
    with pytest.raises(UserError, match="Images/ folder.*parent"):
        dogs.load(dogs_root / "Images", "train")
    with pytest.raises(UserError, match="does not exist"):
        dogs.load(tmp_path / "nowhere", "train")


def test_labels_must_be_one_based_and_match_one_folder(dogs_copy):
    path = dogs_copy / "lists" / "train_list.mat"
    labels = loadmat(str(path))["labels"]
    _rewrite(path, labels=np.where(labels == 1, 2, labels))  # two folders now share label 2
    with pytest.raises(UserError, match="label 2"):
        dogs.load(dogs_copy, "train")
    _rewrite(path, labels=labels - 1)
    with pytest.raises(UserError, match="not a 1-based class number"):
        dogs.load(dogs_copy, "train")


def test_broken_annotation_and_missing_image_are_named(dogs_copy):
    s = dogs.load(dogs_copy, "test").samples[0]
    xml = dogs_copy / "Annotation" / s.path.relative_to(dogs_copy / "Images").with_suffix("")
    xml.write_text("<annotation><object><bndbox><xmin>4")
    with pytest.raises(UserError, match=xml.name):
        dogs.load(dogs_copy, "test")
    xml.unlink()
    s.path.unlink()
    with pytest.raises(UserError, match=s.path.name):
        dogs.load(dogs_copy, "test")


def test_class_without_train_images_is_refused(dogs_copy):
    path = dogs_copy / "lists" / "train_list.mat"
    mat = loadmat(str(path))
    keep = mat["labels"].ravel() != 3
    _rewrite(path, file_list=mat["file_list"][keep], annotation_list=mat["annotation_list"][keep],
             labels=mat["labels"][keep])
    with pytest.raises(UserError, match="has no train images"):
        dogs.load(dogs_copy, "train")
