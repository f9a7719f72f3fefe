"""Tiny random CLIP models and a generated coloured-shapes dataset for tests/clip; no weights, no network."""

from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np
import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.transform import PreprocessCfg
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

TINY_NAME = "fgvc-tiny-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
CLASSES = ["001.Red_Square", "002.Green_Circle", "003.Blue_Triangle", "004.Yellow_Cross"]
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 30)]


def make_tiny_clip(seed: int = 0):
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=TINY_CFG["embed_dim"],
        vision_cfg=CLIPVisionCfg(**TINY_CFG["vision_cfg"]),
        text_cfg=CLIPTextCfg(**TINY_CFG["text_cfg"]),
    )
    open_clip.set_model_preprocess_cfg(model, asdict(PreprocessCfg(size=32)))
    return model.eval()


def draw_shape(label: int, rng: random.Random, size: int = 32) -> Image.Image:
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 60, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise + 90)
    draw = ImageDraw.Draw(image)
    r = rng.randint(7, 11)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    colour = COLOURS[label]
    if label == 0:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif label == 1:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif label == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        draw.rectangle([cx - r, cy - 3, cx + r, cy + 3], fill=colour)
        draw.rectangle([cx - 3, cy - r, cx + 3, cy + r], fill=colour)
    return image


class ShapesDataset(Dataset):
    """Coloured shapes, one class per (colour, shape); PIL images through ``transform``, like FineGrainedDataset."""

    def __init__(self, per_class: int, seed: int, transform=None):
        rng = random.Random(seed)
        self.class_names = list(CLASSES)
        self.items = [(draw_shape(c, rng), c) for c in range(len(CLASSES)) for _ in range(per_class)]
        self.samples = [(f"{seed}/{i}.png", c) for i, (_, c) in enumerate(self.items)]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image, label = self.items[i]
        if self.transform is None:
            return torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255, label
        return self.transform(image), label
