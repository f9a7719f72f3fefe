"""`describe` / `format_info`: what `fgvc data info` prints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fgvc.data import info

# birds50 (`fgvc data birds50`), real photographs: the test runs when FGVC_BIRDS50 names its root
BIRDS50 = Path(os.environ.get("FGVC_BIRDS50") or "/nonexistent")


def test_describe_counts_classes_splits_and_boxes(cub_root):
    d = info.describe("synthbirds", cub_root, val_fraction=0.2)
    assert d["num_classes"] == 4 and d["has_boxes"]
    assert d["splits"] == {"train": 16, "val": 4, "test": 20}  # 4 classes x 10, half test, 20% of train to val
    assert d["train_per_class"] == [4, 4] and "unreadable" not in d
    table = info.format_info(d)
    assert "train images     16" in table and "bounding boxes   yes" in table


def test_check_finds_the_unreadable_image(cub_copy):
    from fgvc.data import cub

    victim = cub.load(cub_copy, "test").samples[2].path
    victim.write_bytes(b"\xff\xd8 truncated jpeg")
    d = info.describe("cub200", cub_copy, check=True)
    assert [u["path"] for u in d["unreadable"]] == [str(victim)]
    assert d["checked"] == 40
    assert f"unreadable       1 of 40 checked\n  {victim}" in info.format_info(d)


def test_dogs_layout_is_described(dogs_root):
    d = info.describe("synthdogs", dogs_root, check=True)
    assert d["num_classes"] == 3 and d["has_boxes"] and d["unreadable"] == []
    assert sum(d["splits"].values()) == 24


@pytest.mark.skipif(not BIRDS50.is_dir(), reason="FGVC_BIRDS50 does not name the birds50 folder")
def test_birds50_is_described_without_boxes():
    d = info.describe("cub200", BIRDS50)
    assert d["num_classes"] == 50 and not d["has_boxes"] and sum(d["splits"].values()) == 2952


def test_check_says_where_the_boxes_sit_against_the_image_edges(dogs_copy):
    from fgvc.data import dogs

    files = sorted(p for p in (dogs_copy / "Annotation").rglob("n*_*") if p.is_file())
    size = 48  # the synthdogs images' side (conftest's DATA_SIZE)
    # every box inside the image, then one at 0, one at the far edge, one a pixel past it
    corners = [(0, 20), (10, size), (1, size + 1)] + [(5, 20)] * (len(files) - 3)
    for path, (x0, x1) in zip(files, corners):
        text = path.read_text()
        text = text.replace(text[text.index("<xmin>"):text.index("</ymax>")],
                            f"<xmin>{x0}</xmin>\n\t\t\t<ymin>5</ymin>\n\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>30")
        path.write_text(text)
        assert dogs.read_box(path) == (x0, 5, x1 - x0, 25)
    d = info.describe("synthdogs", dogs_copy, check=True)
    assert d["box_edges"] == {"boxes": 24, "at_zero": 1, "at_far_edge": 1, "beyond": 1}
    assert "box edges        of 24 boxes 1 touch 0, 1 the image's far edge, 1 pass it" in info.format_info(d)
    assert "box_edges" not in info.describe("synthdogs", dogs_copy)  # headers are read only with --check
