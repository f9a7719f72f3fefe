"""aug.rotation reaches the device augmentation, and the host pipeline flips images."""

import torch
from PIL import Image

from fgvc import config
from fgvc.data.transforms import train_transform
from fgvc.train.device_aug import DeviceAugment, build_device_augment

SIZE = 16


def _batch(side: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (4, 3, side, side), dtype=torch.uint8, generator=g)


def test_device_rotation_follows_aug_rotation():
    def augment(rotation):
        aug = DeviceAugment(SIZE, geometric=True, rotation=rotation, seed=5)
        return aug(_batch(aug.in_side), epoch=0, step=0)

    still, turned = augment(0.0), augment(30.0)
    assert not torch.allclose(still, turned), "aug.rotation=30 rotated nothing"
    assert torch.equal(still, augment(0.0))  # same seed, same crop and flip: only the rotation differs


def test_build_device_augment_passes_aug_rotation_on():
    def augment(rotation):
        cfg = config.load(None, ["aug.geometric=true", f"aug.rotation={rotation}", "data.augment_on=device"])
        aug = build_device_augment(cfg.aug, SIZE, seed=5)
        return aug(_batch(aug.in_side), epoch=0, step=0)

    assert not torch.allclose(augment(0), augment(30))


def test_the_host_pipeline_mirrors_some_images():
    # red grows from left to right: a mirrored crop is one whose red falls from left to right
    side = 64
    ramp = torch.linspace(0, 255, side).round().to(torch.uint8)
    pixels = torch.zeros(side, side, 3, dtype=torch.uint8)
    pixels[..., 0] = ramp[None, :]
    image = Image.fromarray(pixels.numpy())
    pipeline = train_transform(SIZE, geometric=True, rotation=0.0)
    mirrored = []
    for seed in range(24):
        torch.manual_seed(seed)
        red = pipeline(image)[0]
        mirrored.append(bool(red[:, -1].mean() < red[:, 0].mean()))
    assert any(mirrored), "no image of 24 was flipped"
    assert not all(mirrored)
