"""Generated image folders for the audit tests (imported by name: tests/ has no packages)."""

from pathlib import Path

from PIL import Image

from fgvc.data.synthetic import render_sample

SIZE = 64  # px of the generated birds


def write_jpeg(image: Image.Image, path: Path, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(path, "JPEG", quality=quality)
    return path


def folder_dataset(root: Path, classes: int = 4, train: int = 6, test: int = 6, seed: int = 0) -> Path:
    """``root/{train,test}/c<k>/<k>.jpg``: distinct generated birds, ``train`` + ``test`` per class."""
    for c in range(classes):
        for k in range(train + test):
            split = "train" if k < train else "test"
            write_jpeg(render_sample(c, k, SIZE, seed)[0], root / split / f"c{c}" / f"{k:03d}.jpg")
    return root


def plant_variants(source: Path, folder: Path) -> dict[str, Path]:
    """Near-duplicates of the image file ``source`` written into ``folder``: resized to twice its side,
    re-encoded at JPEG quality 30 (the source is quality 90), and with 3% cropped from every side."""
    image = Image.open(source).convert("RGB")
    w, h = image.size
    c = max(1, round(0.03 * w))
    return {"resized": write_jpeg(image.resize((2 * w, 2 * h), Image.BICUBIC), folder / f"{source.stem}_resized.jpg"),
            "jpeg30": write_jpeg(image, folder / f"{source.stem}_jpeg30.jpg", quality=30),
            "cropped": write_jpeg(image.crop((c, c, w - c, h - c)), folder / f"{source.stem}_cropped.jpg")}


def fake_run(run_dir: Path, num_classes: int, model_name: str = "test_resnet", image_size: int = 32,
             checkpoint: bool = True) -> Path:
    """A run directory as `fgvc train` leaves it (config.yaml, classes.json, checkpoints/best.safetensors),
    holding a randomly initialised (seeded) tiny model instead of a trained one."""
    import torch

    from fgvc import config as config_mod
    from fgvc import runs
    from fgvc.models import create_model

    cfg = config_mod.Config()
    cfg.model.name, cfg.data.image_size, cfg.data.name = model_name, image_size, "folder"
    runs.write_text_atomic(run_dir / "config.yaml", config_mod.dump(cfg))
    runs.write_json_atomic(run_dir / "classes.json", [f"c{k}" for k in range(num_classes)])
    if checkpoint:
        torch.manual_seed(0)
        model = create_model(model_name, num_classes, image_size=image_size)
        runs.save_weights(model.state_dict(), run_dir / "checkpoints" / "best.safetensors")
    return run_dir


PALETTE = [(200, 40, 40), (40, 170, 60), (50, 70, 210), (220, 200, 40), (150, 60, 190), (40, 190, 200)]


def colour_dataset(root: Path, classes: int = 4, train: int = 12, test: int = 2, seed: int = 0) -> Path:
    """``root/{train,test}/c<k>/<k>.jpg``: each class a base colour (``PALETTE``) under noise and a few
    random grey shapes, so that even a random backbone's pooled features separate the classes."""
    import numpy as np
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    for c in range(classes):
        for k in range(train + test):
            pixels = np.asarray(PALETTE[c], dtype=np.float32) + rng.normal(0, 25, size=(SIZE, SIZE, 3))
            image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(3):
                x, y = rng.integers(0, SIZE - 16, size=2)
                w, h = rng.integers(6, 16, size=2)
                draw.rectangle([int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            split = "train" if k < train else "test"
            write_jpeg(image, root / split / f"c{c}" / f"{k:03d}.jpg")
    return root
