"""The geometric train pipeline's rotation: torchvision's zero padding instead of a fill value, same pixels."""

import torch
import torch.nn.functional as F
from PIL import Image
from torch.overrides import TorchFunctionMode
from torchvision.transforms import v2

from fgvc.data.transforms import train_transform


def _photo(w: int, h: int, seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g)
    return Image.fromarray(pixels.numpy())


def test_geometric_pipeline_equals_the_one_with_a_zero_fill_rotation():
    # the pipeline before the change: torchvision's RandomRotation with its default fill=0
    ours = train_transform(32, geometric=True, rotation=30.0)
    steps = [v2.RandomRotation(30.0) if isinstance(t, v2.RandomRotation) else t for t in ours.transforms]
    reference = v2.Compose(steps)
    for k, (w, h) in enumerate([(80, 50), (64, 64), (45, 90)]):
        image = _photo(w, h, k)
        for seed in range(20):
            torch.manual_seed(seed)
            a = ours(image)
            torch.manual_seed(seed)
            b = reference(image)
            assert torch.equal(a, b), (w, h, seed)
    # the rotation does turn (corners outside the rotated square are zeros), so the equality is not vacuous
    torch.manual_seed(0)
    out = ours(Image.new("RGB", (64, 64), (255, 255, 255)))
    assert (out == 0).any() and (out == 1).any()


class _Sampled(TorchFunctionMode):
    """Records the channel count of every grid_sample input."""

    def __init__(self):
        super().__init__()
        self.channels = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.grid_sample:
            self.channels.append(args[0].shape[-3])
        return func(*args, **(kwargs or {}))


def test_rotation_samples_the_image_alone():
    # with a fill value torchvision samples a fourth (mask) channel and blends it in: the time this avoids
    with _Sampled() as sampled:
        train_transform(32, geometric=True)(_photo(40, 40, 0))
    assert sampled.channels == [3]
