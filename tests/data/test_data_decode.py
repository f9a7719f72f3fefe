"""Reduced-scale JPEG decoding (data.base.read_rgb min_side) keeps what the pipeline needs."""

import torch
from PIL import Image

from fgvc.data.base import FineGrainedDataset, Sample, read_rgb
from fgvc.data.transforms import decode_min_side, eval_transform


def _photo(path, size=(256, 192)):
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(size[1] // 8, size[0] // 8, 3, generator=g) * 255).byte().numpy()
    Image.fromarray(pixels).resize(size, Image.BILINEAR).save(path, quality=95)
    return path


def test_jpeg_is_decoded_at_the_smallest_scale_that_keeps_min_side(tmp_path):
    path = _photo(tmp_path / "a.jpg")
    assert read_rgb(path).size == (256, 192)
    assert read_rgb(path, min_side=40).size == (64, 48)  # 1/4 scale: short side 48 >= 40
    assert min(read_rgb(path, min_side=100).size) >= 100


def test_png_is_never_reduced(tmp_path):
    Image.new("RGB", (256, 192), (10, 20, 30)).save(tmp_path / "a.png")
    assert read_rgb(tmp_path / "a.png", min_side=40).size == (256, 192)


def test_reduced_decoding_gives_nearly_the_same_eval_tensor(tmp_path):
    path = _photo(tmp_path / "a.jpg", size=(512, 384))
    transform = eval_transform(64)
    full = transform(read_rgb(path))
    reduced = transform(read_rgb(path, min_side=decode_min_side(64)))
    assert (full - reduced).abs().mean() < 0.02


def test_boxes_are_read_at_full_size_whatever_the_hint(tmp_path):
    path = _photo(tmp_path / "a.jpg")
    ds = FineGrainedDataset([Sample(path, 0, (32.0, 24.0, 128.0, 96.0))], ["a"], eval_transform(32))
    ds.decode_min_side = 16
    ds.return_boxes = True
    _, _, box = ds[0]
    # 256x192 -> short side 37 -> centre crop 32: the box keeps its place relative to the image
    scale = round(32 / 0.875) / 192
    assert torch.allclose(box[0], torch.tensor(max(0.0, 32 * scale - (256 * scale - 32) / 2)), atol=1.0)
