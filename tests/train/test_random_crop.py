"""aug.random_crop: the FGVC papers' train crop (resize the shorter side to data.image_size / data.crop_ratio,
a random data.image_size crop, a horizontal flip), on the host and on the device, checked pixel for pixel."""

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor, resize, to_dtype

from fgvc import config
from fgvc.data.transforms import train_transform
from fgvc.train.device_aug import host_side
from fgvc.train.tricks import active, build_tricks, train_inputs

SIZE, RATIO, RESIZED = 16, 0.5, 32  # 16 / 0.5: the shorter side of the image the crop is taken from


def _image(h: int = 40, w: int = 60) -> torch.Tensor:
    """A uint8 (3, h, w) image whose pixels say where they are, so two windows of it never look alike."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([y * 6, x * 4, (3 * x + 5 * y) % 256]).to(torch.uint8)


def _window(out: torch.Tensor, source: torch.Tensor) -> tuple[int, int, bool]:
    """(top, left, flipped) of the ``SIZE`` x ``SIZE`` window of uint8 ``source`` that float ``out`` is, exactly;
    AssertionError when it is none."""
    src = to_dtype(source, torch.float32, scale=True)
    h, w = src.shape[-2:]
    found = [(t, c, f) for t in range(h - SIZE + 1) for c in range(w - SIZE + 1) for f in (False, True)
             if torch.equal(out, src[:, t:t + SIZE, c:c + SIZE].flip(-1) if f else src[:, t:t + SIZE, c:c + SIZE])]
    assert len(found) == 1, f"{len(found)} windows of the {h}x{w} source match"
    return found[0]


def _cfg(*extra):
    return config.load(None, ["data.image_size=16", f"data.crop_ratio={RATIO}", "aug.random_crop=true", *extra])


def test_train_crops_are_windows_of_the_image_resized_by_the_crop_ratio():
    image = _image()
    resized = resize(image, RESIZED, antialias=True)  # 32 x 48: the shorter side is 16 / 0.5
    assert resized.shape[-2:] == (32, 48)
    pipeline = train_transform(SIZE, random_crop=True, crop_ratio=RATIO)
    torch.manual_seed(0)
    seen = {_window(pipeline(image), resized) for _ in range(60)}
    assert len({(t, c) for t, c, _ in seen}) > 20  # the place is drawn anew for each image
    assert {f for _, _, f in seen} == {False, True}  # flipped with p = 0.5
    assert pipeline.decode_min_side == RESIZED  # a JPEG is never decoded below the side it is resized to


def test_the_configs_train_pipeline_is_that_crop():
    cfg = _cfg()
    assert active(cfg) == ["random_crop"]
    image = _image()
    resized = resize(image, RESIZED, antialias=True)
    torch.manual_seed(1)
    assert len({_window(train_inputs(cfg)(image), resized)[:2] for _ in range(20)}) > 5


def test_on_the_device_the_crop_is_a_window_of_the_hosts_resized_square():
    cfg = _cfg("data.augment_on=device")
    image = _image()
    square = train_inputs(cfg)(image)
    assert square.dtype == torch.uint8 and square.shape == (3, RESIZED, RESIZED) == (3, *[host_side(
        SIZE, False, True, RATIO)] * 2)
    resized = resize(image, RESIZED, antialias=True)
    assert torch.equal(square, resized[:, :, 8:40])  # the centred 32 px square of the 32 x 48 resize
    batch = square.unsqueeze(0).repeat(24, 1, 1, 1)
    out = build_tricks(cfg, num_classes=2).inputs(batch, epoch=0, step=0)
    assert out.shape == (24, 3, SIZE, SIZE)
    seen = {_window(o, square) for o in out}
    assert len({(t, c) for t, c, _ in seen}) > 8 and {f for _, _, f in seen} == {False, True}


@pytest.mark.parametrize("where", ["host", "device"])
def test_a_training_run_feeds_its_model_those_crops(tmp_path, where):
    from wiring_helpers import run_and_spy

    image = _image()
    root = tmp_path / "data"
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / split / cls / f"{i}.png")
    cfg = _cfg("model.name=test_resnet", "data.name=folder", f"data.root={root}", "data.num_workers=0",
               "data.val_fraction=0.34", "train.batch_size=8", "train.precision=32-true", "train.epochs=1",
               f"data.augment_on={where}")
    spy = run_and_spy(cfg, tmp_path / "run", stop_after_first_step=True)
    decoded = pil_to_tensor(Image.open(root / "train" / "a" / "0.png").convert("RGB"))
    resized = resize(decoded, RESIZED, antialias=True)
    source = resized if where == "host" else resized[:, :, 8:40]
    for x in spy.first_batch():
        _window(x, source)
