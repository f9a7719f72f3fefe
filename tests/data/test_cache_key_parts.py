"""The image cache is rebuilt when a source file changes its size alone or its mtime alone."""

import io
import os

import torch
from PIL import Image

from fgvc.data import build_dataset, cache
from fgvc.data.transforms import decode_min_side, eval_transform

SIZE = 32


def _split(root):
    ds = build_dataset("synthbirds", root, "test", eval_transform(SIZE), 0.1, 0)
    ds.decode_min_side = decode_min_side(SIZE)
    return ds


def _flipped_jpeg(path, at_most: int | None = None) -> bytes:
    """The image at ``path`` mirrored, as JPEG bytes (no longer than ``at_most``, padded up to it:
    a JPEG decoder stops at its end-of-image marker)."""
    image = Image.open(path).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for quality in range(95, 4, -5):
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        data = out.getvalue()
        if at_most is None or len(data) <= at_most:
            return data if at_most is None else data + b"\0" * (at_most - len(data))
    raise AssertionError("no JPEG of the mirrored image fits")


def test_a_file_of_another_size_with_the_same_mtime_rebuilds_the_cache(cub_copy, tmp_path):
    folder = tmp_path / "cache"
    ds = _split(cub_copy)
    first = cache.cached(ds, folder, progress=False)
    path = ds.samples[2].path
    before = os.stat(path)
    data = _flipped_jpeg(path)
    if len(data) == before.st_size:
        data += b"\0"
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert after.st_mtime_ns == before.st_mtime_ns and after.st_size != before.st_size
    again = cache.cached(_split(cub_copy), folder, progress=False)
    assert again.cache.data_path != first.cache.data_path
    assert torch.equal(again[2][0], ds[2][0]) and not torch.equal(again[2][0], first[2][0])


def test_a_file_of_the_same_size_with_another_mtime_rebuilds_the_cache(cub_copy, tmp_path):
    folder = tmp_path / "cache"
    ds = _split(cub_copy)
    first = cache.cached(ds, folder, progress=False)
    path = ds.samples[2].path
    before = os.stat(path)
    path.write_bytes(_flipped_jpeg(path, at_most=before.st_size))  # other pixels, same number of bytes
    os.utime(path, ns=(1, 1))  # another mtime even where the clock is coarse
    after = os.stat(path)
    assert after.st_size == before.st_size and after.st_mtime_ns != before.st_mtime_ns
    again = cache.cached(_split(cub_copy), folder, progress=False)
    assert again.cache.data_path != first.cache.data_path
    assert torch.equal(again[2][0], ds[2][0]) and not torch.equal(again[2][0], first[2][0])
