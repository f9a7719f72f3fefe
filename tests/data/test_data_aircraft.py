"""FGVC-Aircraft: the loader on a tiny dataset in the official layout, and `prepare` from a local server."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from benchmark_layouts import AIRCRAFT, write_aircraft
from test_data_download import _tar

from fgvc.cli import main
from fgvc.data import aircraft, build_dataset, download, info
from fgvc.errors import UserError


@pytest.fixture(scope="module")
def air(tmp_path_factory) -> dict:
    return write_aircraft(tmp_path_factory.mktemp("aircraft"))


@pytest.fixture
def air_copy(air, tmp_path) -> dict:
    root = Path(shutil.copytree(air["data"].parents[1], tmp_path / "air"))
    return {**air, "root": root, "data": root / "fgvc-aircraft-2013b" / "data"}


def _root(t: dict) -> Path:
    return t["data"].parents[1]


def _ids(ds) -> set[str]:
    return {s.path.stem for s in ds.samples}


def test_test_is_the_official_test_list_with_variant_labels(air):
    test = build_dataset("aircraft", _root(air), "test")
    assert test.name == "aircraft" and test.class_names == [v for v, _, _ in AIRCRAFT]
    assert _ids(test) == {i for i, s in air["split"].items() if s == "test"}
    assert all(s.label == air["variant"][s.path.stem] for s in test.samples)
    assert all(s.path == air["data"] / "images" / f"{s.path.stem}.jpg" for s in test.samples)


def test_train_and_val_partition_trainval_stratified_and_seeded(air):
    root = _root(air)
    train, val = (build_dataset("aircraft", root, s, val_fraction=0.25, seed=3) for s in ("train", "val"))
    test = build_dataset("aircraft", root, "test")
    trainval = {i for i, s in air["split"].items() if s == "trainval"}
    assert not (_ids(train) & _ids(val)) and not ((_ids(train) | _ids(val)) & _ids(test))
    assert _ids(train) | _ids(val) == trainval  # the official train/val halves are both used
    assert sorted(val.targets) == [0, 1, 2]  # one of each class's 4
    assert _ids(build_dataset("aircraft", root, "val", val_fraction=0.25, seed=3)) == _ids(val)
    draws = {frozenset(_ids(build_dataset("aircraft", root, "val", val_fraction=0.25, seed=s))) for s in range(5)}
    assert len(draws) > 1
    assert _ids(build_dataset("aircraft", root, "train", val_fraction=0.0)) == trainval


def test_boxes_are_converted_from_one_based_inclusive_corners(air):
    ds = aircraft.load(_root(air), "test")
    ds.return_boxes = True
    for i, s in enumerate(ds.samples):
        x1, y1, x2, y2 = air["box"][s.path.stem]
        assert s.box == (x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1)
        assert torch.equal(ds[i][2], torch.tensor([x1 - 1, y1 - 1, x2, y2], dtype=torch.float32))


def test_family_and_manufacturer_levels(air):
    maker = build_dataset("aircraft_manufacturer", _root(air), "test")
    family = build_dataset("aircraft_family", _root(air), "test")
    assert maker.class_names == ["Boeing", "Airbus"] and family.class_names == [f for _, f, _ in AIRCRAFT]
    want = {i: (0 if air["variant"][i] < 2 else 1) for i in air["variant"]}
    assert all(s.label == want[s.path.stem] for s in maker.samples)
    assert [s.label for s in family.samples] == [air["variant"][s.path.stem] for s in family.samples]


def test_root_may_be_the_data_folder_and_info_checks_every_image(air, capsys):
    a, b = aircraft.load(_root(air), "train"), aircraft.load(air["data"], "train")
    assert a.samples == b.samples
    d = info.describe("aircraft", _root(air), check=True, val_fraction=0.25)
    assert d["splits"] == {"train": 9, "val": 3, "test": 6} and d["has_boxes"] and d["unreadable"] == []
    assert main(["data", "info", "aircraft", "--root", str(air["data"]), "--check"]) == 0
    assert "classes          3" in capsys.readouterr().out


def _first_trainval(data: Path) -> str:
    return (data / "images_variant_trainval.txt").read_text().splitlines()[0]


BAD = {
    # name: (file to edit, edit(lines, data folder), words the error must contain)
    "unknown class": ("images_variant_test.txt", lambda ls, d: [ls[0].split()[0] + " 747-400"] + ls[1:],
                      ["images_variant_test.txt line 1", "'747-400'", "variants.txt"]),
    "image in both splits": ("images_variant_test.txt", lambda ls, d: ls + [_first_trainval(d)],
                             ["in both images_variant_trainval.txt", "images_variant_test.txt"]),
    "bad box": ("images_box.txt", lambda ls, d: [ls[0].split()[0] + " 30 5 10 20"] + ls[1:],
                ["images_box.txt line 1", "xmin <= xmax"]),
    "box missing": ("images_box.txt", lambda ls, d: ls[1:], ["has no line in", "images_box.txt"]),
    "malformed line": ("images_variant_trainval.txt", lambda ls, d: ["1000037"] + ls[1:],
                       ["images_variant_trainval.txt line 1", "<image_id> <class name>"]),
    "path in id": ("images_variant_trainval.txt", lambda ls, d: ["../x 707-320"] + ls[1:], ["'../x'"]),
    "duplicate class": ("variants.txt", lambda ls, d: ls + [ls[0]], ["variants.txt lists class '707-320' twice"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_broken_files_raise_one_sentence_naming_them(air_copy, case):
    name, edit, words = BAD[case]
    path = air_copy["data"] / name
    path.write_text("\n".join(edit(path.read_text().splitlines(), air_copy["data"])) + "\n")
    with pytest.raises(UserError) as e:
        aircraft.load(air_copy["root"], "train")
    for w in words:
        assert w in str(e.value)


def test_missing_files_and_wrong_roots_say_what_to_do(air_copy, cub_root, tmp_path):
    data = air_copy["data"]
    with pytest.raises(UserError, match="FGVC-Aircraft layout.*use dataset aircraft"):
        build_dataset("cub200", air_copy["root"], "train")
    with pytest.raises(UserError, match="CUB-200-2011 layout"):
        aircraft.load(cub_root, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds no variants\.txt.*prepare aircraft"):
        aircraft.load(tmp_path / "empty", "train")
    victim = next(iter(aircraft.load(data, "test").samples)).path
    victim.unlink()
    with pytest.raises(UserError, match=f"image {victim} listed in .* does not exist"):
        aircraft.load(data, "test")
    (data / "images_variant_test.txt").unlink()
    with pytest.raises(UserError, match=r"images_variant_test\.txt is missing"):
        aircraft.load(data, "train")


def test_without_images_box_there_are_no_boxes(air_copy):
    (air_copy["data"] / "images_box.txt").unlink()
    assert not aircraft.load(air_copy["root"], "test").has_boxes


def test_prepare_downloads_and_extracts_without_a_known_md5(server, air, tmp_path):
    archive = _tar({"fgvc-aircraft-2013b": _root(air) / "fgvc-aircraft-2013b"})
    server.files["/a/fgvc-aircraft-2013b.tar.gz"] = archive
    url, root = server.url + "/a/fgvc-aircraft-2013b.tar.gz", tmp_path / "data"
    assert download.AIRCRAFT_MD5 is None  # none is published: the archive is used unchecked
    with pytest.raises(UserError, match="has md5 .* but 0{32} was expected"):
        download.prepare("aircraft", root, url=url, md5="0" * 32, progress=False)
    assert main(["data", "prepare", "aircraft", "--root", str(root), "--url", url,
                 "--md5", hashlib.md5(archive).hexdigest()]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["fgvc-aircraft-2013b", "fgvc-aircraft-2013b.tar.gz"]
    assert _ids(aircraft.load(root, "test")) == _ids(aircraft.load(_root(air), "test"))
    requests = len(server.log)
    download.prepare("aircraft", root, url=url, progress=False)
    assert len(server.log) == requests  # already there: nothing fetched again


def test_prepare_refuses_an_archive_that_is_not_aircraft(server, cub_root, tmp_path):
    server.files["/x.tar.gz"] = _tar({"fgvc-aircraft-2013b/data/readme.txt": b"hello"})
    with pytest.raises(UserError, match="not a valid aircraft dataset.*variants.txt"):
        download.prepare("aircraft", tmp_path / "d", url=server.url + "/x.tar.gz", progress=False)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["fgvc-aircraft-2013b.tar.gz"]
