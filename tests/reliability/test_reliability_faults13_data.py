"""Caches keyed by their inputs, one preprocessing on every path,
annotations read whole, no silent prompt truncation, file-system walks that count each image once."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc import api, runs
from fgvc.cli import main
from fgvc.data import synthetic
from fgvc.data.base import FineGrainedDataset, Sample
from fgvc.data.transforms import eval_preprocessing, eval_transform, load_eval_image

DOCS = Path(__file__).resolve().parents[2] / "docs"
FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=8", "train.epochs=1", "train.patience=0",
        "data.num_workers=0", "train.accelerator=cpu", "data.name=synthbirds"]


@pytest.fixture(scope="module")
def big_images_run(tmp_path_factory):
    """A 1-epoch run at 32 px on 96 px JPEGs, so the reduced-scale decode (48 px, not 96) matters.

    Precision is left at auto, as a user runs it: bf16-mixed on a CPU with bf16 instructions.
    """
    from fgvc import config
    from fgvc.train import train

    root = synthetic.generate(tmp_path_factory.mktemp("big") / "birds", classes=4, per_class=8, size=96, seed=3)
    cfg = config.load(None, [*FAST, f"data.root={root}", f"out={tmp_path_factory.mktemp('runs')}"])
    return train(cfg, progress=False)


# ---------------------------------------------------------------- 13: eval scores a split as training did

@pytest.mark.parametrize("split", ["test", "val"])
def test_eval_gives_the_numbers_training_recorded(big_images_run, split, capsys):
    recorded = runs.read_metrics(big_images_run)
    assert main(["eval", str(big_images_run), "--split", split, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == recorded[f"{split}_images"]
    assert result["acc"] == recorded[f"{split}_acc"]
    assert result["loss"] == pytest.approx(recorded[f"{split}_loss"], abs=1e-6)


def test_an_eval_pipeline_carries_its_reduced_decode(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 160, 3), dtype=np.uint8)).save(path)
    transform = eval_transform(32)
    ds = FineGrainedDataset([Sample(path, 0)], ["a"], transform)
    # the dataset, predict's loader and a full decode: the first two agree, the third is another image
    assert torch.equal(ds[0][0], load_eval_image(path, 32)[0])
    from fgvc.data.base import read_rgb
    assert not torch.equal(ds[0][0], transform(read_rgb(path)))


# ---------------------------------------------------------------- 7: predict, eval, serve, export agree

def _exif_jpeg(path: Path, seed: int) -> Path:
    """A 240x144 JPEG with asymmetric content and EXIF Orientation=6 (shown turned 90 degrees clockwise).

    At 32 px the pipeline decodes it at half scale (72 >= 37 px), so the reduced decode matters too.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (144, 240, 3), dtype=np.uint8)
    pixels[:40] = (250, 20, 20)  # a red band along the stored top edge: upright, it is the right edge
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def _rgba_png(path: Path) -> Path:
    pixels = np.zeros((80, 64, 4), dtype=np.uint8)
    pixels[..., 1] = 200
    pixels[20:60, 10:50, 3] = 255  # an opaque green square, transparent (black underneath) elsewhere
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def _docs_block(after: str) -> str:
    text = (DOCS / "export.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text[text.index(after):], re.S).group(1)


def test_every_path_feeds_the_model_the_same_input(big_images_run, tmp_path, monkeypatch):
    from fgvc.export import export_model, sidecar_path
    from fgvc.predict import predict_files
    from fgvc.serve import Predictor

    size = runs.load_config(big_images_run).data.image_size
    images = [_exif_jpeg(tmp_path / f"phone{i}.jpg", i) for i in range(3)] + [_rgba_png(tmp_path / "cutout.png")]
    model, class_names = api.load(big_images_run)

    # what training's val/test scoring and `fgvc eval` feed the model: the dataset path
    ds = FineGrainedDataset([Sample(p, 0) for p in images], class_names, eval_transform(size))
    reference = torch.stack([ds[i][0] for i in range(len(images))])
    upright = reference[0]
    assert upright[1, :, -2:].max() < 0.2 < upright[1, :2, :].mean()  # EXIF applied: the red band is on the right
    assert reference[3][:, 0, 0].tolist() == [1.0, 1.0, 1.0]  # transparency on white, not black

    predictor = Predictor(big_images_run)
    for i, p in enumerate(images):
        assert torch.equal(load_eval_image(p, size)[0], reference[i])  # `fgvc predict`
        assert torch.equal(predictor.input(p.read_bytes())[0], reference[i])  # `fgvc serve`

    out = export_model(big_images_run, "pt2", out=tmp_path / "export" / "model.pt2")
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["preprocessing"] == eval_preprocessing(size)
    assert sidecar["preprocessing"]["exif_orientation"] is True

    # docs/export.md's plain-PyTorch snippet, run as written beside the exported files
    monkeypatch.chdir(out.parent)
    (out.parent / "bird.jpg").write_bytes(images[0].read_bytes())
    snippet: dict = {}
    exec(_docs_block("Plain PyTorch"), snippet)  # noqa: S102 -- the documented code itself is under test
    for i, p in enumerate(images):
        assert torch.equal(snippet["preprocess"](str(p))[0], reference[i]), p.name

    # the probabilities `fgvc predict` prints, the PyTorch model's and the exported model's on the reference
    predicted = predict_files(big_images_run, images, topk=len(class_names))
    with torch.no_grad():
        expected = model(reference).softmax(1)
        exported = snippet["model"](torch.stack([snippet["preprocess"](str(p))[0] for p in images])).softmax(1)
    assert torch.allclose(exported, expected, atol=1e-5)
    for row, probs in zip(predicted, expected):
        for top in row["top"]:
            assert top["prob"] == pytest.approx(float(probs[top["index"]]), abs=1e-6)  # printed to 6 places


def test_a_png_with_a_transparent_colour_is_composited_on_white(tmp_path):
    from fgvc.data.base import read_rgb

    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[:4] = (10, 120, 30)
    for mode in ("RGB", "L"):
        path = tmp_path / f"{mode}.png"
        image = Image.fromarray(pixels if mode == "RGB" else pixels[..., 1])
        image.save(path, transparency=(0, 0, 0) if mode == "RGB" else 0)
        decoded = np.asarray(read_rgb(path))
        assert decoded[7, 0].tolist() == [255, 255, 255], mode  # the transparent colour, on white
        assert decoded[0, 0].tolist() != [255, 255, 255], mode  # opaque pixels kept


# ---------------------------------------------------------------- 8: every instance of a VOC annotation

def _two_dogs(first=(2, 3, 20, 20), second=(26, 24, 46, 44)) -> str:
    objects = "".join(f"<object><name>dog</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                      f"<ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in (first, second))
    return f"<annotation><size><width>48</width><height>48</height></size>{objects}</annotation>"


def test_a_voc_annotation_with_two_dogs_keeps_both_boxes(dogs_copy):
    from fgvc.data import dogs

    first = dogs.load(dogs_copy, "test").samples[0]
    (dogs_copy / "Annotation" / first.path.relative_to(dogs_copy / "Images").with_suffix("")).write_text(_two_dogs())
    ds = dogs.load(dogs_copy, "test", eval_transform(48))
    s = ds.samples[0]
    assert s.boxes == [(2.0, 3.0, 18.0, 17.0), (26.0, 24.0, 20.0, 20.0)]
    assert all(len(t.boxes) == 1 for t in ds.samples[1:])
    ds.return_boxes = True
    _, _, boxes = ds[0]  # both moved through resize + centre crop, in the image's pixels
    scale, offset = round(48 / 0.875) / 48, (round(48 / 0.875) - 48) / 2
    expected = torch.tensor([[2, 3, 20, 20], [26, 24, 46, 44]]) * scale - round(offset)
    assert boxes.shape == (2, 4) and torch.allclose(boxes, expected.clamp(0, 48), atol=1e-3)
    _, _, single = ds[1]  # one box: padded with a row of NaN, so a batch has one shape
    assert single.shape == (2, 4) and torch.isnan(single[1]).all() and not torch.isnan(single[0]).any()


def test_a_map_on_the_second_dog_is_a_hit(monkeypatch):
    from fgvc.explain import localization
    from fgvc.explain.localization import box_area_share, energy_in_box, evaluate_localization, pointing_game

    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [20.0, 20.0, 30.0, 30.0]])
    heatmap = torch.zeros(32, 32)
    heatmap[24:27, 24:27] = 1.0  # all the evidence on the second dog
    assert not pointing_game(heatmap, boxes[0]) and energy_in_box(heatmap, boxes[0]) == 0.0
    assert pointing_game(heatmap, boxes) and energy_in_box(heatmap, boxes) == pytest.approx(1.0)
    assert box_area_share(boxes, 32, 32) == pytest.approx((64 + 100) / 1024)
    overlapping = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0], [float("nan")] * 4])
    assert box_area_share(overlapping, 32, 32) == pytest.approx((64 + 64 - 16) / 1024)  # the union, once
    assert energy_in_box(torch.ones(32, 32), overlapping) == pytest.approx((64 + 64 - 16) / 1024)

    # the whole scoring over a loader of (image, label, (K, 4) boxes), as `fgvc explain` feeds it
    monkeypatch.setattr(localization, "explain",
                        lambda model, images, method, labels: heatmap.expand(len(images), 32, 32))
    batch = (torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long),
             torch.stack([boxes, torch.tensor([[20.0, 20.0, 30.0, 30.0], [float("nan")] * 4])]))
    result = evaluate_localization(torch.nn.Identity(), [batch], methods=["cam"], progress=False)["cam"]
    assert result["n"] == 2 and result["pointing_game"] == 1.0 and result["energy_in_box"] == pytest.approx(1.0)


# ---------------------------------------------------------------- 10: symlinks in a folder dataset

def _folder_dataset(root: Path, per_class: int = 3) -> Path:
    for split in ("train", "test"):
        for c, colour in (("a", 30), ("b", 220)):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((8, 8, 3), colour + i, dtype=np.uint8)).save(d / f"{c}{i}.png")
    return root


def test_a_symlink_loop_in_a_folder_dataset_is_one_sentence(tmp_path, capsys):
    from reliability_helpers import one_line_error

    root = _folder_dataset(tmp_path / "root")
    os.symlink("..", root / "train" / "a" / "loop")  # train/a/loop -> train: a and b again, forever
    assert main(["data", "info", "folder", "--root", str(root)]) == 2
    line = one_line_error(capsys.readouterr())
    assert str(root / "train" / "a" / "loop") in line and "loop" in line and "counted twice" in line


def test_a_link_to_another_split_or_class_is_refused(tmp_path):
    from fgvc.data import folder
    from fgvc.errors import UserError

    root = _folder_dataset(tmp_path / "root")
    os.symlink(root / "train" / "b", root / "test" / "b" / "more")  # train images leaking into test
    with pytest.raises(UserError, match=r"symbolic link .*more leads to .*train/b a second time"):
        folder.load(root, "test")
    (root / "test" / "b" / "more").unlink()
    os.symlink(root / "train" / "a" / "a0.png", root / "train" / "b" / "a0.png")  # one image, two labels
    with pytest.raises(UserError, match="counted twice"):
        folder.load(root, "train")


def test_class_folders_linked_from_elsewhere_are_read_once(tmp_path):
    from fgvc.data import folder

    root = _folder_dataset(tmp_path / "root")
    elsewhere = tmp_path / "elsewhere"
    (root / "train" / "b").rename(elsewhere)
    os.symlink(elsewhere, root / "train" / "b")
    train, val = folder.load(root, "train", val_fraction=0.34), folder.load(root, "val", val_fraction=0.34)
    assert len(train) + len(val) == 6 and {s.path.name for s in train.samples + val.samples} == {
        "a0.png", "a1.png", "a2.png", "b0.png", "b1.png", "b2.png"}


def test_an_image_listed_twice_in_cub_images_txt_is_refused(cub_copy):
    from fgvc.data import cub
    from fgvc.errors import UserError

    images = cub_copy / "CUB_200_2011" / "images.txt"
    lines = images.read_text().splitlines()
    last_id = lines[-1].split()[0]
    lines[-1] = f"{last_id} {lines[0].split()[1]}"  # the last id names the first image's file
    images.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"images.txt line {len(lines)}: image .* is already listed on line 1"):
        cub.load(cub_copy, "train")


def test_an_image_in_both_stanford_dogs_lists_is_refused(dogs_copy):
    from scipy.io import loadmat, savemat

    from fgvc.data import dogs
    from fgvc.errors import UserError

    train, test = dogs_copy / "lists" / "train_list.mat", dogs_copy / "lists" / "test_list.mat"
    t, e = loadmat(str(train)), loadmat(str(test))
    e["file_list"][0, 0] = t["file_list"][0, 0]  # a train image also listed for test
    e["annotation_list"][0, 0] = t["annotation_list"][0, 0]
    e["labels"][0, 0] = t["labels"][0, 0]
    savemat(str(test), {k: v for k, v in e.items() if not k.startswith("__")})
    with pytest.raises(UserError, match=r"is listed twice \(in train_list.mat and test_list.mat\)"):
        dogs.load(dogs_copy, "test")


def test_explain_on_image_files_sees_what_predict_sees(big_images_run, tmp_path, monkeypatch):
    from fgvc.explain.run import explain_run
    from fgvc.models.factory import Classifier

    size = runs.load_config(big_images_run).data.image_size
    images = [_exif_jpeg(tmp_path / f"phone{i}.jpg", i) for i in range(2)] + [_rgba_png(tmp_path / "cutout.png")]
    expected = torch.cat([load_eval_image(p, size) for p in images])  # `fgvc predict`'s input
    seen = []
    real = Classifier.forward

    def forward(self, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(Classifier, "forward", forward)
    explain_run(big_images_run, images, methods="gradcam", out_dir=tmp_path / "explain", log=None)
    assert any(x.shape == expected.shape and torch.equal(x, expected) for x in seen)
