"""NABirds: the loader on a tiny dataset in the official layout (UUID ids, sparse class ids)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from benchmark_layouts import NABIRDS_CLASSES, NABIRDS_LEAVES, write_nabirds

from fgvc.cli import main
from fgvc.data import build_dataset, info, nabirds
from fgvc.errors import UserError


@pytest.fixture(scope="module")
def nab(tmp_path_factory) -> dict:
    return write_nabirds(tmp_path_factory.mktemp("nabirds"))


@pytest.fixture
def nab_copy(nab, tmp_path) -> Path:
    return Path(shutil.copytree(nab["base"], tmp_path / "n" / "nabirds"))


def _rel(ds) -> list[str]:
    return [s.path.relative_to(ds.root / "images").as_posix() for s in ds.samples]


def test_sparse_leaf_class_ids_map_to_contiguous_labels_with_names(nab):
    test = build_dataset("nabirds", nab["base"].parent, "test")
    assert test.name == "nabirds"
    assert test.class_names == [NABIRDS_CLASSES[c] for c in NABIRDS_LEAVES]  # in id order; inner nodes dropped
    assert set(_rel(test)) == {r for r, t in nab["split"].items() if t == 0}
    for rel, s in zip(_rel(test), test.samples):
        assert s.label == NABIRDS_LEAVES.index(nab["class"][rel]) and s.box == nab["box"][rel]


def test_train_val_partition_official_train_and_info(nab):
    train, val = (nabirds.load(nab["base"], s, val_fraction=0.25, seed=2) for s in ("train", "val"))
    test = nabirds.load(nab["base"], "test")
    assert not set(_rel(train)) & set(_rel(val)) and not (set(_rel(train)) | set(_rel(val))) & set(_rel(test))
    assert set(_rel(train)) | set(_rel(val)) == {r for r, t in nab["split"].items() if t == 1}
    assert sorted(val.targets) == [0, 1, 2]
    d = info.describe("nabirds", nab["base"], check=True, val_fraction=0.25)
    assert d["splits"] == {"train": 9, "val": 3, "test": 6} and d["has_boxes"] and d["unreadable"] == []


def _edit(path: Path, fn) -> None:
    path.write_text("\n".join(fn(path.read_text().splitlines())) + "\n")


BAD = {
    "class not in classes.txt": ("image_class_labels.txt", lambda ls: [ls[0].split()[0] + " 777"] + ls[1:],
                                 ["image_class_labels.txt line 1", "class id 777"]),
    "split not 0/1": ("train_test_split.txt", lambda ls: [ls[0].split()[0] + " 2"] + ls[1:],
                      ["train_test_split.txt line 1", "0/1"]),
    "label missing": ("image_class_labels.txt", lambda ls: ls[1:], ["is missing from", "image_class_labels.txt"]),
    "bad box": ("bounding_boxes.txt", lambda ls: [ls[0].split()[0] + " 1 1 0 5"] + ls[1:],
                ["bounding_boxes.txt line 1", "width"]),
    "duplicate id": ("images.txt", lambda ls: ls + [ls[0]], ["images.txt line 19", "already appears on line 1"]),
    "duplicate class id": ("classes.txt", lambda ls: ls + ["22 Sparrows"], ["classes.txt line 7", "class id 22"]),
    "path outside": ("images.txt", lambda ls: [ls[0].split()[0] + " ../x.jpg"] + ls[1:], ["'../x.jpg'"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_broken_files_are_named(nab_copy, case):
    name, edit, words = BAD[case]
    _edit(nab_copy / name, edit)
    with pytest.raises(UserError) as e:
        nabirds.load(nab_copy, "train")
    assert all(w in str(e.value) for w in words)


def test_missing_boxes_file_means_no_boxes_and_missing_image_is_named(nab_copy):
    (nab_copy / "bounding_boxes.txt").unlink()
    test = nabirds.load(nab_copy, "test")
    assert not test.has_boxes
    test.samples[0].path.unlink()
    with pytest.raises(UserError, match=f"{test.samples[0].path.name} listed in .* does not exist"):
        nabirds.load(nab_copy, "test")


def test_wrong_roots_point_at_the_right_dataset(nab, cub_root, tmp_path):
    with pytest.raises(UserError, match="CUB-200-2011 layout"):
        nabirds.load(cub_root, "train")
    with pytest.raises(UserError, match=r"holds no hierarchy\.txt.*allaboutbirds"):
        nabirds.load(tmp_path, "train")
    with pytest.raises(UserError, match="NABirds layout.*use dataset nabirds"):
        build_dataset("aircraft", nab["base"], "train")


def test_prepare_explains_the_terms_form(nab, tmp_path, capsys):
    assert main(["data", "prepare", "nabirds", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "https://dl.allaboutbirds.org/nabirds" in err and len(err.strip().splitlines()) == 1
    assert main(["data", "prepare", "nabirds", "--root", str(nab["base"].parent)]) == 0


def test_cub_loader_pointed_at_nabirds_says_so(nab):
    with pytest.raises(UserError, match="is not CUB: .*use dataset nabirds"):
        build_dataset("cub200", nab["base"].parent / "nabirds", "train")
