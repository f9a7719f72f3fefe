"""fgvc data audit, the embedding detector: a mirrored image embeds as its source does, the similarity
threshold is inclusive, and through the CLI a mirrored copy planted in another class (which the hashes
miss) is found, reported as a label error, and kept or dropped exactly at its similarity."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from audit_helpers import SIZE, folder_dataset, write_jpeg
from PIL import Image, ImageOps

from fgvc.audit.embeddings import embed_files, similar_pairs
from fgvc.cli import main
from fgvc.data.synthetic import render_sample
from fgvc.models import create_model

MODEL = "test_efficientnet"  # random tiny weights: distinct generated birds stay below 0.98 cosine


def _model():
    torch.manual_seed(0)
    return create_model(MODEL, 7, image_size=SIZE)


def test_mirrored_image_embeds_as_its_source(tmp_path):
    image = render_sample(1, 3, SIZE, 0)[0].convert("RGB")  # a generated bird, facing one way
    image.save(tmp_path / "a.png")
    ImageOps.mirror(image).save(tmp_path / "mirrored.png")  # lossless: the very pixels, mirrored
    ImageOps.flip(image).save(tmp_path / "upside_down.png")
    e = embed_files([tmp_path / "a.png", tmp_path / "mirrored.png", tmp_path / "upside_down.png"], _model(), SIZE)
    assert torch.allclose(e.norm(dim=1), torch.ones(3))
    assert float(e[0] @ e[1]) == pytest.approx(1.0, abs=1e-6)
    assert float(e[0] @ e[2]) < 0.999  # only left-right mirroring is undone, not any change


def test_similarity_threshold_is_inclusive():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.75, 0.6614378], [0.5, 0.8660254], [1.0, 0.0]])  # cosines 0.75, 0.5, 1 with a
    assert similar_pairs(a, b, 0.75) == [(0, 2, 1.0), (0, 0, 0.75)]
    one_step_past = float(np.nextafter(0.75, 1.0))
    assert similar_pairs(a, b, one_step_past) == [(0, 2, 1.0)]
    assert similar_pairs(a, b, 0.5) == [(0, 2, 1.0), (0, 0, 0.75), (0, 1, pytest.approx(0.5))]


@pytest.fixture(scope="module")
def mirrored_leak(tmp_path_factory):
    """4 classes x (6 train + 6 test) distinct birds; test image c0/006 mirrored (JPEG) into train/c1; and
    a weights file of a randomly initialised tiny backbone. Returns (root, weights, (test file, copy))."""
    base = tmp_path_factory.mktemp("embed")
    root = folder_dataset(base / "data", classes=4, train=6, test=6)
    source = root / "test" / "c0" / "006.jpg"
    copy = write_jpeg(ImageOps.mirror(Image.open(source).convert("RGB")), root / "train" / "c1" / "mirrored.jpg")
    from safetensors.torch import save_file

    weights = base / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in _model().net.state_dict().items()}, str(weights))
    return root, weights, (source.resolve(), copy.resolve())


def _audit(root, weights, out, *extra):
    assert main(["data", "audit", "folder", "--root", str(root), "--what", "duplicates", "--model", MODEL,
                 "--weights", str(weights), "--image-size", str(SIZE), "--out", str(out), "--quiet", *extra]) == 0
    with open(out / "pairs.csv", newline="", encoding="utf-8") as f:
        pairs = [p for p in csv.DictReader(f) if p["kind"] == "train-test"]
    return pairs, json.loads((out / "summary.json").read_text())["duplicates"]


def test_mirrored_copy_in_another_class_found_by_embedding_only(mirrored_leak, tmp_path):
    root, weights, leak = mirrored_leak
    pairs, summary = _audit(root, weights, tmp_path / "both", "--similarity", "0.99")
    assert [(Path(p["image"]).resolve(), Path(p["match"]).resolve()) for p in pairs] == [leak]
    (p,) = pairs
    assert p["detector"] == "embedding" and int(p["distance"]) > 20 and float(p["similarity"]) > 0.999
    assert (p["label"], p["match_label"]) == ("c0", "c1")
    assert summary["detectors"] == ["hash", "embedding"] and summary["cross_class_pairs"] == 1
    assert summary["test_images_with_duplicate"] == 1 and summary["similarity"] == 0.99
    assert MODEL in summary["embedding"]
    # the hashes alone miss it: a mirrored photograph moves most of their bits
    hash_only, summary = _audit(root, weights, tmp_path / "hash", "--detectors", "hash")
    assert hash_only == [] and summary["detectors"] == ["hash"] and summary["similarity"] is None


def test_similarity_boundary_through_the_cli(mirrored_leak, tmp_path):
    root, weights, leak = mirrored_leak
    pairs, _ = _audit(root, weights, tmp_path / "first", "--detectors", "embedding", "--similarity", "0.99")
    s = float(pairs[0]["similarity"])
    at, _ = _audit(root, weights, tmp_path / "at", "--detectors", "embedding", "--similarity", repr(s))
    assert [(Path(p["image"]).resolve(), Path(p["match"]).resolve()) for p in at] == [leak]
    past, _ = _audit(root, weights, tmp_path / "past", "--detectors", "embedding", "--similarity",
                     repr(float(np.nextafter(s, 2.0))))
    assert past == []

