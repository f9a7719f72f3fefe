"""Augmentation on the accelerator (run here on the CPU): shapes, what each step does, seeding."""

import pytest
import torch
from PIL import Image

from fgvc.data import build_dataset
from fgvc.data.cache import split_pipeline
from fgvc.data.transforms import eval_transform
from fgvc.train.device_aug import DeviceAugment, host_side, host_transform

SIZE = 32


def _halves(n=32, side=None):
    """n copies of a square image, black on its left half and white on its right."""
    side = side or host_side(SIZE, True)
    x = torch.zeros(n, 3, side, side, dtype=torch.uint8)
    x[..., side // 2:] = 255
    return x


def test_geometric_batches_are_cropped_flipped_and_in_range():
    aug = DeviceAugment(SIZE, geometric=True, rotation=0.0)
    out = aug(_halves(), epoch=0, step=0)
    assert out.shape == (32, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    left, right = out[..., : SIZE // 4].mean((1, 2, 3)), out[..., -SIZE // 4:].mean((1, 2, 3))
    flipped = (left > right).sum().item()
    assert 0 < flipped < 32  # a flip with p = 0.5: some images mirrored, not all
    # random crops: the black/white edge lands at a different column in different images
    edge = (out[:, 0, SIZE // 2] > 0.5).float().argmax(1)
    assert len(set(edge.tolist())) > 3


def test_without_geometric_it_is_the_plain_resize_and_crop_of_evaluation(cub_root):
    ds = build_dataset("synthbirds", cub_root, "test", None, 0.1, 0)
    images = [Image.open(s.path).convert("RGB") for s in ds.samples[:6]]
    host = torch.stack([host_transform(SIZE)(im) for im in images])
    assert host.dtype == torch.uint8 and host.shape == (6, 3, SIZE, SIZE)
    expected = torch.stack([eval_transform(SIZE)(im) for im in images])
    assert torch.equal(DeviceAugment(SIZE)(host, epoch=3, step=1), expected)
    assert not torch.equal(DeviceAugment(SIZE, geometric=True)(torch.stack(
        [host_transform(SIZE, True)(im) for im in images]), epoch=3, step=1), expected)


def test_the_host_part_is_all_fixed_steps_so_the_cache_holds_it_whole():
    for geometric in (False, True):
        fixed, rest = split_pipeline(host_transform(SIZE, geometric))
        assert rest == [] and len(fixed) == 3


def test_cutout_zeroes_one_clipped_square_per_hole():
    white = torch.full((16, 3, SIZE, SIZE), 255, dtype=torch.uint8)
    out = DeviceAugment(SIZE, cutout=1, cutout_size=0.25)(white, epoch=0, step=0)
    holes = out[:, 0] == 0
    assert (holes == (out == 0).all(1)).all()  # every channel
    for hole in holes:
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 8 and 0 < len(cols) <= 8
        assert hole.sum() == len(rows) * len(cols)  # a rectangle: the square, clipped at the border
    assert holes.sum() > 16 * 8 * 8 // 3  # most holes are whole squares


def test_a_batch_depends_on_seed_epoch_step_and_rank_only():
    x = _halves(8)
    aug = DeviceAugment(SIZE, geometric=True, cutout=2, seed=5)
    torch.manual_seed(0)
    expected_stream = torch.rand(3)
    torch.manual_seed(0)
    first = aug(x, epoch=2, step=7)
    assert torch.equal(torch.rand(3), expected_stream)  # the caller's random stream is untouched
    assert torch.equal(DeviceAugment(SIZE, geometric=True, cutout=2, seed=5)(x, epoch=2, step=7), first)
    for other in (aug(x, epoch=3, step=7), aug(x, epoch=2, step=8),
                  DeviceAugment(SIZE, geometric=True, cutout=2, seed=6)(x, epoch=2, step=7),
                  DeviceAugment(SIZE, geometric=True, cutout=2, seed=5, rank=1)(x, epoch=2, step=7)):
        assert not torch.equal(other, first)


def test_a_batch_the_host_did_not_prepare_is_refused():
    with pytest.raises(ValueError, match="host_transform"):
        DeviceAugment(SIZE, geometric=True)(torch.rand(2, 3, SIZE, SIZE), epoch=0, step=0)


def test_data_augment_on_device_feeds_the_model_what_device_augmentation_made(tiny_synthbirds_root, tmp_path,
                                                                              monkeypatch):
    from wiring_helpers import run_and_spy

    from fgvc import config
    from fgvc.train import device_aug

    seen = []  # (the host batch, what DeviceAugment made of it)
    real = device_aug.DeviceAugment.__call__

    def recorded(self, x, epoch, step):
        out = real(self, x, epoch, step)
        seen.append((x.clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(device_aug.DeviceAugment, "__call__", recorded)
    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=16", "data.num_workers=0",
                             "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", "train.batch_size=8",
                             "train.precision=32-true", "train.epochs=1", "aug.geometric=true", "aug.cutout=1",
                             "data.augment_on=device"])
    spy = run_and_spy(cfg, tmp_path / "run", stop_after_first_step=True)
    host, made = seen[0]
    assert host.dtype == torch.uint8 and host.shape[-1] == host_side(16, True)  # the host only resized
    assert torch.equal(spy.first_batch(), made)  # the model's first training input is the device's batch


def test_each_training_batch_is_augmented_with_its_own_epoch_step_and_the_run_seed(tiny_synthbirds_root, tmp_path,
                                                                                    monkeypatch):
    # the loop's (epoch, step) and train.seed must reach DeviceAugment: with a constant pair every batch of
    # every epoch would get the same crops, flips and holes
    from fgvc import config
    from fgvc.train import device_aug, train

    calls = []
    real = device_aug.DeviceAugment.__call__

    def recorded(self, x, epoch, step):
        calls.append((self.seed, epoch, step))
        return real(self, x, epoch, step)

    monkeypatch.setattr(device_aug.DeviceAugment, "__call__", recorded)
    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=16", "data.num_workers=0",
                             "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", "train.batch_size=8",
                             "train.precision=32-true", "train.epochs=2", "train.seed=7", "aug.geometric=true",
                             "data.augment_on=device", f"out={tmp_path}"])
    train(cfg, progress=False)
    steps = len(calls) // 2
    assert steps >= 2 and len(calls) == 2 * steps
    assert calls == [(7, e, s) for e in range(2) for s in range(steps)]
