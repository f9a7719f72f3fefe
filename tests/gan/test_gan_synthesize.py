"""Generated images as a labelled dataset on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.errors import UserError
from fgvc.gan import load_generator, sample_dataset, save_real_vs_generated


def test_sample_dataset_writes_the_folder_layout_with_class_names_and_counts(tiny_run, tmp_path):
    out = sample_dataset(tiny_run, per_class=3, out_dir=tmp_path / "generated", seed=1)
    train = out / "train"
    assert sorted(p.name for p in train.iterdir()) == ["blue_blob", "green_blob", "red_blob"]
    for folder in train.iterdir():
        files = sorted(folder.glob("*.png"))
        assert len(files) == 3
        with Image.open(files[0]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    info = json.loads((out / "gan_samples.json").read_text())
    assert info["per_class"] == 3 and info["class_names"] == ["red_blob", "green_blob", "blue_blob"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_sample_dataset_reads_back_through_the_folder_loader(tiny_run, tmp_path):
    from fgvc.data import build_dataset
    from fgvc.data.transforms import eval_transform

    out = sample_dataset(tiny_run, per_class=4, out_dir=tmp_path / "generated")
    try:
        ds = build_dataset("folder", out, "train", eval_transform(32), val_fraction=0.0)
    except NotImplementedError:
        pytest.skip("the folder loader is not written yet")
    assert sorted(ds.class_names) == ["blue_blob", "green_blob", "red_blob"]
    assert len(ds) == 12
    counts = torch.bincount(torch.tensor(ds.targets), minlength=3)
    assert counts.tolist() == [4, 4, 4]


def test_sample_dataset_is_reproducible_per_seed(tiny_run, tmp_path):
    a = sample_dataset(tiny_run, per_class=2, out_dir=tmp_path / "a", seed=3)
    b = sample_dataset(tiny_run, per_class=2, out_dir=tmp_path / "b", seed=3)
    c = sample_dataset(tiny_run, per_class=2, out_dir=tmp_path / "c", seed=4)
    name = "train/red_blob/gan_00000.png"
    assert (a / name).read_bytes() == (b / name).read_bytes() != (c / name).read_bytes()


def test_sample_dataset_refuses_a_non_empty_output_folder(tiny_run, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        sample_dataset(tiny_run, per_class=1, out_dir=out)
    assert (out / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (sample_dataset(tiny_run, per_class=1, out_dir=empty) / "train").is_dir()


def test_generator_from_a_folder_that_is_not_a_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a GAN run"):
        load_generator(tmp_path)


def test_ema_and_raw_generators_are_both_loadable_and_differ(tiny_run):
    ema, raw = load_generator(tiny_run), load_generator(tiny_run, ema=False)
    assert not ema.training
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), raw.parameters()))


def test_generator_of_an_earlier_checkpoint_loads_and_differs_from_the_latest(tiny_run):
    early, latest = load_generator(tiny_run, iteration=2), load_generator(tiny_run)
    assert any(not torch.equal(a, b) for a, b in zip(early.parameters(), latest.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(latest.parameters(), load_generator(tiny_run, iteration=4).parameters()))
    with pytest.raises(UserError, match=r"no checkpoint at iteration 3 \(kept: 2, 4\)"):
        load_generator(tiny_run, iteration=3)


def test_real_vs_generated_rows_hold_the_classes_real_images_then_a_gap_then_generated(tiny_run, blobs, tmp_path):
    images = torch.stack([x for x, _ in blobs.items])
    labels = torch.tensor([y for _, y in blobs.items])
    path = save_real_vs_generated(load_generator(tiny_run), images, labels, [2, 0], n=3, path=tmp_path / "f.png")
    with Image.open(path) as im:
        grid = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    block = 3 * 34 + 2  # make_grid: 2 px padding around and between 32 px images
    assert grid.shape == (3, 2 * 34 + 2, 2 * block + 16)
    # row 1, column 1 is the first real image of class 2 (blue); row 2 starts with class 0's (red)
    assert torch.allclose(grid[:, 2:34, 2:34], images[labels == 2][0], atol=1 / 255 + 1e-6)
    assert torch.allclose(grid[:, 36:68, 2:34], images[labels == 0][0], atol=1 / 255 + 1e-6)
    assert torch.all(grid[:, :, block:block + 16] == 1.0)  # the white gap
    with pytest.raises(UserError, match="fewer than the 99"):
        save_real_vs_generated(load_generator(tiny_run), images, labels, [0], n=99, path=tmp_path / "g.png")


def test_class_names_with_a_slash_sample_and_mix_back_into_their_classes(tiny_run, tmp_path):
    # Stanford Cars has 'Ram C/V Cargo Van Minivan 2012', FGVC-Aircraft 'F/A-18'
    import shutil

    from fgvc.data.base import FineGrainedDataset, Sample
    from fgvc.data.generated import mix_generated

    run = shutil.copytree(tiny_run, tmp_path / "run")
    meta = json.loads((run / "meta.json").read_text())
    names = ["Ram C/V Cargo Van Minivan 2012", "F/A-18", "100% blue"]
    (run / "meta.json").write_text(json.dumps({**meta, "class_names": names}))
    out = sample_dataset(run, per_class=2, out_dir=tmp_path / "generated")
    assert sorted(p.name for p in (out / "train").iterdir()) == ["100%25 blue", "F%2FA-18",
                                                                 "Ram C%2FV Cargo Van Minivan 2012"]
    real = FineGrainedDataset([Sample(tmp_path / "x.jpg", i) for i in range(3)], names, None, name="cars",
                              split="train")
    mixed = mix_generated(real, out, "generated")
    by_label = {}
    for s in mixed.samples:
        by_label.setdefault(s.label, set()).add(s.path.parent.name)
    assert by_label == {0: {"Ram C%2FV Cargo Van Minivan 2012"}, 1: {"F%2FA-18"}, 2: {"100%25 blue"}}
