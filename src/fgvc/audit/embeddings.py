"""Near-duplicates by embedding: cosine similarity of a frozen backbone's features, invariant to mirroring.

Perceptual hashes (``fgvc.audit.duplicates``) find pixel copies, but a copy that was cropped, mirrored,
colour-shifted or turned grey moves many of their bits. A pretrained backbone's pooled features move
far less. Each image is decoded (``read_rgb``, EXIF orientation applied), resized whole to size x size
(no centre crop, so a cropped copy keeps what it shares with its source), and passed through the
backbone with its mirror image; its embedding is the sum of the two feature vectors (the input of the
classification head), L2-normalised. The sum is the same for an image and its mirror image, so a
mirrored copy matches as an exact one does. Two images pair when the cosine similarity of their
embeddings is at least ``threshold``.

The backbone is a pretrained one (``--model``, ``--weights``), as the label audit may use; not a run's
own, whose training on these labels draws the images of one class together.
The default threshold 0.9 was calibrated on copies of real bird photographs planted into a training
set, with the ImageNet MobileNetV2 (``benchmarks/audit_duplicates.py``; docs/evaluation.md, "Data
audits"): it finds mirrored copies, crops to 80-90% of each side and colour-jittered copies, which
the hashes miss, and misses grey copies, which they find. Another backbone needs its own threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fgvc.errors import UserError

DEFAULT_SIMILARITY = 0.9


def check_similarity(threshold: float) -> float:
    """``threshold`` as a float in (0, 1]; UserError otherwise."""
    if not 0 < threshold <= 1:
        raise UserError(f"--similarity {threshold} is out of range; use a cosine similarity in (0, 1], "
                        f"e.g. the default {DEFAULT_SIMILARITY}")
    return float(threshold)


def backbone(run: str | Path | None, model_name: str | None, weights: str | None, image_size: int):
    """(frozen model whose head input is the feature, input size, description): a run's best checkpoint,
    or ``model_name`` with ``weights`` (a local file, fgvc.models.weights) or timm's pretrained weights."""
    from fgvc import api
    from fgvc import config as config_mod

    if run is not None:
        finished = api.Run(run)
        if not (finished.dir / "checkpoints" / "best.safetensors").is_file():
            raise UserError(f"run {finished.dir} has no checkpoints/best.safetensors; pass a finished run of "
                            "`fgvc train`")
        return finished.model(), finished.image_size, f"run {finished.dir}"
    if not model_name:
        raise UserError("the label audit or the embedding detector needs features: pass --run RUN_DIR or "
                        "--model NAME (with --weights FILE for local pretrained weights)")
    from fgvc.api import build_model

    cfg = config_mod.Config()
    cfg.model.name, cfg.data.image_size = model_name, image_size
    if weights:
        if not Path(weights).expanduser().is_file():
            raise UserError(f"weights file {weights} does not exist; pass a .safetensors, .pth or .tflite file")
        cfg.model.weights = str(Path(weights).expanduser())
    else:
        cfg.model.pretrained = True
    # the head's size is irrelevant: only its input, the backbone's features, is used
    return build_model(cfg, 2), image_size, f"{model_name} ({Path(weights).name if weights else 'pretrained'})"


class _Whole(torch.utils.data.Dataset):
    """Image files resized whole to size x size, in [0, 1]."""

    def __init__(self, paths: list[Path], size: int):
        from torchvision.transforms import v2

        self.paths, self.size = list(paths), size
        self.transform = v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True),
                                     v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from fgvc.data.base import read_rgb

        return self.transform(read_rgb(self.paths[i], self.size))


def embed_files(paths: list[Path], model: torch.nn.Module, size: int, batch_size: int = 32,
                device: str = "cpu", progress: bool = False, desc: str = "embedding") -> torch.Tensor:
    """(N, D) float32, unit rows: the L2-normalised sum of ``model``'s head input for each image and its
    mirror image. An unreadable file raises UnreadableImage naming it."""
    from torch.utils.data import DataLoader

    from fgvc.devices import resolve_channels_last

    # a CNN in channels-last runs its convolutions in NHWC (1.0-1.5x on a CPU); the features are the same
    memory = torch.channels_last if resolve_channels_last("auto", model, torch.device(device), "32-true") \
        else torch.contiguous_format
    feats: list[torch.Tensor] = []
    handle = model.head.register_forward_hook(lambda m, inp, out: feats.append(inp[0].detach().float().cpu()))
    sums = []
    try:
        model.eval().to(device, memory_format=memory)
        loader = DataLoader(_Whole(paths, size), batch_size=batch_size, num_workers=0)
        with torch.inference_mode():
            for x in tqdm(loader, desc=desc, leave=False, disable=not progress):
                x = x.to(device)
                feats.clear()
                # one pass over the batch and its mirror image
                model(torch.cat([x, x.flip(-1)]).contiguous(memory_format=memory))
                f = feats[0]
                sums.append(f[: len(x)] + f[len(x):])
    finally:
        handle.remove()
    if not sums:
        return torch.zeros((0, 0))
    return torch.nn.functional.normalize(torch.cat(sums), dim=1)


def similar_pairs(a: torch.Tensor, b: torch.Tensor, threshold: float,
                  chunk: int = 2048) -> list[tuple[int, int, float]]:
    """(i, j, cosine similarity) for every row i of ``a`` and j of ``b`` whose similarity is at least
    ``threshold``, most similar first. ``a`` (N, D) and ``b`` (M, D) with unit rows."""
    out = []
    if len(a) == 0 or len(b) == 0:
        return out
    for start in range(0, len(a), chunk):
        # compared in float64: the threshold is a Python float, and a float32 comparison would round it
        s = (a[start:start + chunk] @ b.T).numpy().astype(np.float64)
        for i, j in zip(*np.nonzero(s >= threshold)):
            out.append((start + int(i), int(j), float(s[i, j])))
    return sorted(out, key=lambda t: (-t[2], t[0], t[1]))


__all__ = ["DEFAULT_SIMILARITY", "backbone", "check_similarity", "embed_files", "similar_pairs"]
