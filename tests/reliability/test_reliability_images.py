"""Odd and broken image files: converted to RGB correctly, or one sentence naming the file."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import FAST, one_line_error

from fgvc.cli import main
from fgvc.data import cub
from fgvc.data.base import read_rgb
from fgvc.errors import ImageTooLarge, UnreadableImage


def _close(rgb, expected, tol=12):
    return all(abs(a - b) <= tol for a, b in zip(rgb, expected))


# --- files that decode: each must come out as the right RGB image ---

def test_png_with_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(tmp_path / "a.png")
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "la.png")
    assert read_rgb(tmp_path / "a.png").getpixel((3, 3)) == (255, 127, 127)  # half red over white
    assert read_rgb(tmp_path / "la.png").getpixel((3, 3)) == (255, 255, 255)  # fully transparent: white, not black


def test_grayscale_and_one_bit_images_become_three_equal_channels(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "g.jpg")
    Image.new("1", (8, 8), 1).save(tmp_path / "b.png")
    g, b = read_rgb(tmp_path / "g.jpg"), read_rgb(tmp_path / "b.png")
    assert g.mode == b.mode == "RGB"
    assert _close(g.getpixel((4, 4)), (77, 77, 77), 2) and b.getpixel((4, 4)) == (255, 255, 255)


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    Image.new("RGB", (16, 16), (200, 30, 30)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    assert _close(read_rgb(tmp_path / "c.jpg").getpixel((8, 8)), (200, 30, 30))


@pytest.mark.parametrize("name, mode", [("g16.png", "I;16"), ("g16be.tif", "I;16B"), ("g32.tif", "I")])
def test_16_bit_grayscale_is_scaled_to_8_bit(tmp_path, name, mode):
    values = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    im = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32)).convert(mode)
    im.save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode
    out = np.asarray(read_rgb(tmp_path / name))
    assert out.shape == (8, 8, 3)
    assert np.abs(out[..., 0].astype(int) - (values.astype(int) >> 8)).max() <= 1  # not clipped to white


def test_palette_image_keeps_its_colours_and_transparent_index_is_white(tmp_path):
    p = Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE)
    p.save(tmp_path / "p.png")
    p.save(tmp_path / "pt.png", transparency=0)
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert read_rgb(tmp_path / "p.png").getpixel((1, 1)) == (10, 200, 30)
    assert read_rgb(tmp_path / "pt.png").getpixel((1, 1)) == (255, 255, 255)


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    # stored 40 wide x 20 high, left half red, right half blue; orientation 6 = "rotate 90 CW to view"
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_rgb(tmp_path / "r.jpg")
    assert out.size == (20, 40)  # upright: taller than wide
    assert _close(out.getpixel((10, 5)), (255, 0, 0), 40) and _close(out.getpixel((10, 35)), (0, 0, 255), 40)


# --- files that do not decode: one sentence naming the file ---

def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds almost nothing: a decompression bomb's header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


BAD_FILES = {
    # name: (file name, bytes or None for a folder, words of the sentence)
    "truncated jpeg": ("cut.jpg", _jpeg_bytes()[:900], "cannot be decoded"),
    "truncated png": ("cut.png", _png_bytes()[:2000], "cannot be decoded"),
    "zero bytes": ("empty.jpg", b"", "cannot be decoded"),
    "text named .jpg": ("notes.jpg", b"species: wren\n", "cannot be decoded"),
    "html error page saved as .jpg": ("page.jpg", b"<html><body>403 Forbidden</body></html>", "cannot be decoded"),
    "folder named .jpg": ("folder.jpg", None, "cannot be decoded"),
    "decompression bomb": ("bomb.png", _png_header(30000, 30000), "decompression-bomb limit"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_undecodable_file_is_one_sentence_naming_it(tmp_path, case):
    name, data, words = BAD_FILES[case]
    path = tmp_path / name
    path.mkdir() if data is None else path.write_bytes(data)
    with pytest.raises(UnreadableImage) as e:
        read_rgb(path)
    assert str(path) in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UnreadableImage, match=r"gone\.jpg does not exist"):
        read_rgb(tmp_path / "gone.jpg")


def test_image_over_the_pixel_warning_limit_is_refused_without_a_warning(tmp_path, monkeypatch):
    # between PIL's limit and twice that PIL only warns and decodes; fgvc refuses with its sentence
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")  # 1600 pixels
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLarge, match=r"big\.png has more pixels than .* \(1000 pixels\)"):
            read_rgb(tmp_path / "big.png")
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(30000, 30000))  # 900 megapixels: 2.7 GB if decoded

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a decompression bomb")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    with pytest.raises(ImageTooLarge, match="decompression-bomb"):  # an UnreadableImage to every caller
        read_rgb(path)


# --- whole datasets ---

def test_data_info_check_lists_every_problem_at_once(birds, capsys):
    samples = cub.load(birds, "test").samples
    broken = {samples[0].path: b"", samples[1].path: _jpeg_bytes()[:900], samples[2].path: b"not an image",
              samples[3].path: _png_header(30000, 30000)}
    for path, data in broken.items():
        path.write_bytes(data)
    assert main(["data", "info", "synthbirds", "--root", str(birds), "--check", "--json"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    info = json.loads(captured.out)
    assert sorted(u["path"] for u in info["unreadable"]) == sorted(str(p) for p in broken)
    assert info["checked"] == 64


def _train_argv(root, out, *extra):
    return ["train", *FAST, f"data.root={root}", f"out={out}", "train.epochs=1", "--quiet", *extra]


def test_training_stops_on_an_unreadable_image_with_one_sentence_even_in_a_worker(birds, tmp_path, capsys):
    # data.num_workers=2 (the default): the DataLoader wraps a worker's error in its traceback
    victim = cub.load(birds, "train").samples[0].path
    victim.write_bytes(_jpeg_bytes()[:900])  # opens (the header is whole), fails to decode in the worker
    assert main(_train_argv(birds, tmp_path / "runs", "data.num_workers=2")) == 2
    line = one_line_error(capsys.readouterr())
    assert str(victim) in line and "data.skip_bad_images=true" in line and "--check" in line


def test_skip_bad_images_trains_without_them_and_counts_them(birds, tmp_path, capsys):
    bad = [cub.load(birds, "train").samples[0].path, cub.load(birds, "test").samples[0].path]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(_jpeg_bytes()[:900])
    assert main(_train_argv(birds, tmp_path / "runs", "data.skip_bad_images=true")) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["skipped_images"] == 2
    assert metrics["train_images"] == len(cub.load(birds, "train")) - 1
    assert metrics["test_images"] == len(cub.load(birds, "test")) - 1
    assert all(str(p) in out for p in bad)


def test_skipping_every_train_image_of_a_class_is_one_sentence(birds, tmp_path, capsys):
    for s in cub.load(birds, "train").samples:
        if s.label == 2:
            s.path.write_bytes(b"")
    assert main(_train_argv(birds, tmp_path / "runs", "data.skip_bad_images=true")) == 2
    line = one_line_error(capsys.readouterr())
    assert "has no train images" in line and "unreadable images are left out" in line


def test_an_image_that_does_not_open_stops_training_before_the_first_epoch(birds, tmp_path, capsys):
    # every file of every split is opened (its header read) before training: a broken test image is found
    # in seconds, not after hours of epochs
    test = cub.load(birds, "test").samples
    test[0].path.write_bytes(b"")
    test[3].path.write_bytes(b"<html>not found</html>")
    assert main(_train_argv(birds, tmp_path / "runs")) == 2
    captured = capsys.readouterr()
    line = one_line_error(captured)
    assert "2 images of synthbirds cannot be opened" in line and str(test[0].path) in line
    assert "data.skip_bad_images=true" in line and "--check" in line
    assert "epoch" not in captured.out and not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_a_run_stopped_by_a_bad_test_image_resumes_with_skipping(birds, tmp_path, capsys):
    # a test image that opens but does not decode (truncated) is met after all the training:
    # resuming keeps the finished epochs
    cub.load(birds, "test").samples[0].path.write_bytes(_jpeg_bytes()[:900])
    assert main(_train_argv(birds, tmp_path / "runs")) == 2
    one_line_error(capsys.readouterr())
    run_dir = next((tmp_path / "runs").iterdir())
    assert (run_dir / "checkpoints" / "best.safetensors").is_file()
    assert main(["train", "--resume", str(run_dir), "data.skip_bad_images=true", "--quiet"]) == 0
    assert "epoch   1" not in capsys.readouterr().out  # the epoch was not trained again
    assert json.loads((run_dir / "metrics.json").read_text())["skipped_images"] == 1
    assert "skip_bad_images: true" in (run_dir / "config.yaml").read_text()


def test_eval_with_an_unreadable_image_in_a_worker_is_one_sentence(birds, tmp_path, capsys):
    assert main(_train_argv(birds, tmp_path / "runs")) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    config_yaml = Path(run_dir) / "config.yaml"
    config_yaml.write_text(config_yaml.read_text().replace("num_workers: 0", "num_workers: 2"))
    victim = cub.load(birds, "test").samples[5].path
    victim.write_bytes(b"GIF89a")
    assert main(["eval", run_dir]) == 2
    line = one_line_error(capsys.readouterr())
    assert str(victim) in line and "cannot be decoded" in line
