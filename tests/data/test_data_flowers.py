"""Flowers-102: the loader on tiny .mat files in the official layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from benchmark_layouts import write_flowers
from scipy.io import savemat
from test_data_download import _md5, _tar

from fgvc.cli import main
from fgvc.data import build_dataset, download, flowers, info
from fgvc.errors import UserError


@pytest.fixture(scope="module")
def flo(tmp_path_factory) -> dict:
    return write_flowers(tmp_path_factory.mktemp("flowers"))


@pytest.fixture
def flo_copy(flo, tmp_path) -> Path:
    return Path(shutil.copytree(flo["base"], tmp_path / "f" / "flowers-102"))


def _numbers(ds) -> set[int]:
    return {s.image_id for s in ds.samples}


def test_test_is_tstid_with_labels_and_clip_names(flo):
    test = build_dataset("flowers102", flo["base"].parent, "test")
    assert test.name == "flowers102" and test.class_names == ["pink primrose", "hard-leaved pocket orchid",
                                                              "canterbury bells"]
    assert _numbers(test) == {n for n, s in flo["set"].items() if s == "tstid"}
    for s in test.samples:
        assert s.label == flo["label"][s.image_id] - 1 and s.path.name == f"image_{s.image_id:05d}.jpg"
    assert len(flowers.NAMES) == 102 and flowers.NAMES[-1] == "blackberry lily"


def test_train_and_val_partition_trnid_plus_valid(flo):
    train, val = (flowers.load(flo["base"], s, val_fraction=0.25, seed=0) for s in ("train", "val"))
    assert not _numbers(train) & _numbers(val)
    assert _numbers(train) | _numbers(val) == {n for n, s in flo["set"].items() if s in ("trnid", "valid")}
    assert sorted(val.targets) == [0, 1, 2]
    d = info.describe("flowers102", flo["base"], check=True, val_fraction=0.25)
    assert d["splits"] == {"train": 9, "val": 3, "test": 9} and not d["has_boxes"] and d["unreadable"] == []


def test_broken_mat_files_are_named(flo, flo_copy):
    savemat(str(flo_copy / "setid.mat"), {"trnid": np.array([[1, 2]]), "valid": np.array([[2]]),
                                          "tstid": np.array([[3]])})
    with pytest.raises(UserError, match=r"setid\.mat: image 2 is in both 'trnid' and 'valid'"):
        flowers.load(flo_copy, "train")
    savemat(str(flo_copy / "setid.mat"), {"trnid": np.array([[1, 99]]), "valid": np.array([[2]]),
                                          "tstid": np.array([[3]])})
    with pytest.raises(UserError, match=r"entry 2 of 'trnid' is 99; expected an image number"):
        flowers.load(flo_copy, "train")
    savemat(str(flo_copy / "setid.mat"), {"trnid": np.array([[1]])})
    with pytest.raises(UserError, match=r"has no key 'valid'"):
        flowers.load(flo_copy, "train")
    savemat(str(flo_copy / "imagelabels.mat"), {"labels": np.array([[1, 103]])})
    with pytest.raises(UserError, match=r"entry 2 of 'labels' is 103; expected a class number from 1 to 102"):
        flowers.load(flo_copy, "train")
    shutil.copy(flo["base"] / "imagelabels.mat", flo_copy / "imagelabels.mat")
    (flo_copy / "setid.mat").unlink()
    with pytest.raises(UserError, match=r"setid\.mat is missing"):
        flowers.load(flo_copy, "train")


def test_missing_image_and_wrong_roots(flo, flo_copy, cub_root, tmp_path):
    victim = flowers.load(flo_copy, "test").samples[0].path
    victim.unlink()
    with pytest.raises(UserError, match=f"{victim.name} listed in .* does not exist"):
        flowers.load(flo_copy, "test")
    with pytest.raises(UserError, match="Flowers-102 layout.*use dataset flowers102"):
        build_dataset("dogs", flo["base"], "train")
    with pytest.raises(UserError, match="CUB-200-2011 layout"):
        flowers.load(cub_root, "train")
    (tmp_path / "e").mkdir()
    with pytest.raises(UserError, match=r"holds no imagelabels\.mat.*robots\.ox\.ac\.uk"):
        flowers.load(tmp_path / "e", "train")


def test_prepare_downloads_the_archive_and_both_mat_files(server, flo, tmp_path):
    files = {"102flowers.tgz": _tar({"jpg": flo["base"] / "jpg"}),
             "imagelabels.mat": (flo["base"] / "imagelabels.mat").read_bytes(),
             "setid.mat": (flo["base"] / "setid.mat").read_bytes()}
    for name, data in files.items():
        server.files[f"/m/{name}"] = data
    # the official (torchvision's) md5s refuse these stand-in files
    with pytest.raises(UserError, match=r"102flowers\.tgz from .* but 52808999861908f626f3c1f4e79d11fa was expected"):
        download.prepare("flowers102", tmp_path / "a", url=server.url + "/m", progress=False)
    md5 = ",".join(_md5(files[n]) for n in ("102flowers.tgz", "imagelabels.mat", "setid.mat"))
    root = tmp_path / "b"
    assert main(["data", "prepare", "flowers102", "--root", str(root), "--url", server.url + "/m/setid.mat",
                 "--md5", md5]) == 0
    assert sorted(p.name for p in (root / "flowers-102").iterdir()) == ["imagelabels.mat", "jpg", "setid.mat"]
    assert _numbers(flowers.load(root, "test")) == _numbers(flowers.load(flo["base"], "test"))
