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
