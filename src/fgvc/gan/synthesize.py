"""Images from a trained GAN run: load the generator, sample per class, write sample grids
and a labelled dataset in fgvc's ``folder`` layout (``OUT/train/<class name>/*.png``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from fgvc.data.base import readable_name
from fgvc.devices import resolve_device
from fgvc.errors import UserError
from fgvc.gan.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_weights,
    make_temp_dir,
)
from fgvc.gan.networks import Generator
from fgvc.runs import check_out_dir, save_figure, write_bytes_atomic

META_FILE = "meta.json"  # class names and architecture of a GAN run


def read_meta(run_dir: str | Path) -> dict:
    """The run's ``meta.json``: class_names, n_classes, image_size, ch, z_dim, dataset."""
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a GAN run directory (no {META_FILE}); pass the folder `fgvc gan train` printed")
    return json.loads(path.read_text(encoding="utf-8"))


def checkpoint_folder(run_dir: str | Path, iteration: int | None = None) -> Path:
    """The folder of the checkpoint at ``iteration`` (None: the latest), or UserError listing the kept ones."""
    if iteration is None:
        folder = latest_checkpoint(Path(run_dir))
        if folder is None:
            raise UserError(f"GAN run {run_dir} has no checkpoint yet; let `fgvc gan train` reach a checkpoint first")
        return folder
    folder = Path(run_dir) / "checkpoints" / f"iter_{iteration:06d}"
    if not folder.is_dir():
        kept = ", ".join(str(int(p.name[5:])) for p in list_checkpoints(Path(run_dir))) or "none"
        raise UserError(f"GAN run {run_dir} has no checkpoint at iteration {iteration} (kept: {kept}); "
                        "train with keep_checkpoints=0 to keep every one")
    return folder


def load_generator(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu",
                   iteration: int | None = None) -> Generator:
    """The generator of the checkpoint at ``iteration`` (default the latest; EMA weights unless ``ema=False``), eval mode."""
    meta = read_meta(run_dir)
    folder = checkpoint_folder(run_dir, iteration)
    g = Generator(meta["n_classes"], meta["image_size"], meta["ch"], meta["z_dim"])
    load_weights(g, folder / ("G_ema.safetensors" if ema else "G.safetensors"))
    return g.to(device).eval()


@torch.no_grad()
def sample(generator: Generator, class_ids: Sequence[int], n: int, z_dim: int | None = None,
           seed: int = 0, batch_size: int = 64) -> Tensor:
    """``n`` images per class id, class-major: (len(class_ids) * n, 3, S, S) in [0, 1].

    Noise comes from a CPU generator seeded with ``seed``, so the images do not depend on
    the device or the batch size (the generator runs in eval mode: BN uses running stats).
    """
    z_dim = z_dim or generator.z_dim
    bad = [c for c in class_ids if not 0 <= int(c) < generator.n_classes]
    if bad:
        raise UserError(f"class id {bad[0]} is out of range; this generator knows classes 0..{generator.n_classes - 1}")
    device = next(generator.parameters()).device
    labels = torch.as_tensor(list(class_ids), dtype=torch.long).repeat_interleave(n)
    z = torch.randn(len(labels), z_dim, generator=torch.Generator().manual_seed(seed))
    was_training = generator.training
    generator.eval()
    out = [
        generator(z[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)).cpu()
        for i in range(0, len(labels), batch_size)
    ]
    generator.train(was_training)
    images = torch.cat(out) if out else torch.empty(0, 3, generator.image_size, generator.image_size)
    return ((images + 1) / 2).clamp(0, 1)


def png_bytes(image: Tensor) -> bytes:
    """A (3, H, W) image in [0, 1] encoded as PNG."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@torch.no_grad()
def save_sample_grid(generator: Generator, class_ids: Sequence[int], z: Tensor, path: Path,
                     class_names: Sequence[str] | None = None, title: str = "") -> Path:
    """One row per class id, one column per row of ``z`` (the same noise in every row), as PNG; with
    ``class_names`` (names of all the generator's classes) each row is labelled with its class."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    n = z.shape[0]
    labels = torch.as_tensor(list(class_ids), dtype=torch.long).repeat_interleave(n)
    images = generator(z.repeat(len(class_ids), 1).to(device), labels.to(device)).cpu()
    generator.train(was_training)
    images = ((images + 1) / 2).clamp(0, 1)
    if class_names is None:
        write_bytes_atomic(path, png_bytes(make_grid(images, nrow=n, padding=2, pad_value=1.0)))
        return path
    rows = [class_names[int(c)] if 0 <= int(c) < len(class_names) else f"class {int(c)}" for c in class_ids]
    return save_figure(sample_grid_figure(images, rows, n, title), Path(path), dpi=100)


def sample_grid_figure(images: Tensor, row_labels: Sequence[str], n: int, title: str = ""):
    """A matplotlib Figure of ``images`` ((rows * n, 3, S, S) in [0, 1], row-major) with each row
    labelled by its class (readable names wrapped at word boundaries, never cut mid-word)."""
    import textwrap

    from matplotlib.figure import Figure

    grid = make_grid(images, nrow=n, padding=2, pad_value=1.0)
    rows = len(row_labels)
    size = images.shape[-1]
    height, width = grid.shape[1], grid.shape[2]
    scale = max(1.0, 48 / size)  # small samples drawn larger
    fig = Figure(figsize=(width * scale / 100 + 2.2, height * scale / 100 + 0.7))
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    centres = [2 + r * (size + 2) + size / 2 for r in range(rows)]
    ax.set_yticks(centres, [textwrap.fill(readable_name(name), 22, break_long_words=False) for name in row_labels],
                  fontsize=8)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    title = title or f"generated samples: a row per class, the same noise in each of the {n} columns"
    ax.set_title(textwrap.fill(title, max(40, int(width * scale / 100 * 14))), fontsize=9)  # wrapped to the grid
    fig.tight_layout()
    return fig


@torch.no_grad()
def save_real_vs_generated(generator: Generator, real_images: Tensor, real_labels: Tensor,
                           class_ids: Sequence[int], n: int, path: Path, seed: int = 0) -> Path:
    """Per class id one row: its first ``n`` real images, a gap, ``n`` generated ones (the seed's Figure 4), as PNG.

    ``real_images`` (N, 3, S, S) in [0, 1] (or uint8) with ``real_labels`` (N,); every class needs ``n`` real images.
    """
    reals = []
    for c in class_ids:
        own = real_images[torch.as_tensor(real_labels) == int(c)][:n]
        if len(own) < n:
            raise UserError(f"class {c} has {len(own)} real images, fewer than the {n} asked for; lower n")
        reals.append(own.float() / 255 if own.dtype == torch.uint8 else own.float())
    fakes = sample(generator, class_ids, n, seed=seed)
    size = fakes.shape[-1]
    left = make_grid(torch.cat(reals), nrow=n, padding=2, pad_value=1.0)
    right = make_grid(fakes, nrow=n, padding=2, pad_value=1.0)
    gap = torch.ones(3, left.shape[1], max(4, size // 2))
    write_bytes_atomic(Path(path), png_bytes(torch.cat([left, gap, right], dim=2)))
    return Path(path)


def class_folder(name: str) -> str:
    """The folder name of class ``name`` in a sampled dataset: '%', '/' and the OS separator
    percent-encoded (Stanford Cars' 'Ram C/V Cargo Van Minivan 2012', FGVC-Aircraft's 'F/A-18'), so
    ``urllib.parse.unquote`` gives the class name back (fgvc.data.generated does)."""
    return name.replace("%", "%25").replace("/", "%2F").replace(os.sep, "%" + format(ord(os.sep), "02X"))


def _check_class_names(names: list[str]) -> None:
    for name in names:
        if not name or name in (".", "..") or "\0" in name:
            raise UserError(f"class name {name!r} cannot be a folder name; rename the class in the training data")


def sample_dataset(run_dir: str | Path, per_class: int, out_dir: str | Path, seed: int = 0,
                   ema: bool = True, device: str = "auto", batch_size: int = 64) -> Path:
    """Write ``per_class`` PNGs for every class to ``out_dir/train/<class name>/``; returns out_dir.

    Class names are the training dataset's, in its order. A non-empty ``out_dir`` is refused;
    the images are written to a temporary sibling folder and renamed into place at the end.
    """
    if per_class < 1:
        raise UserError(f"--per-class must be 1 or more, got {per_class}")
    out_dir = check_out_dir(out_dir, "--out")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"output folder {out_dir} already exists and is not empty; choose a new --out folder or remove it")
    meta = read_meta(run_dir)
    names = list(meta["class_names"])
    _check_class_names(names)
    generator = load_generator(run_dir, ema=ema, device=resolve_device(device))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, f".{out_dir.name}.")
    try:
        for label, name in enumerate(names):
            folder = tmp / "train" / class_folder(name)
            folder.mkdir(parents=True)
            # one seed per class keeps a class's images the same when per_class grows
            images = sample(generator, [label], per_class, seed=seed * 1_000_003 + label, batch_size=batch_size)
            for i, image in enumerate(images):
                (folder / f"gan_{i:05d}.png").write_bytes(png_bytes(image))
        info = {"gan_run": Path(run_dir).name, "checkpoint": latest_checkpoint(Path(run_dir)).name,
                "ema": ema, "seed": seed, "per_class": per_class, "class_names": names}
        (tmp / "gan_samples.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # checked empty above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
