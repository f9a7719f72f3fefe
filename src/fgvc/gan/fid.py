"""Image-quality numbers for generated images.

``classifier_frechet_distance`` works offline: the Frechet distance between Gaussians fitted
to real and generated images' features from a feature extractor you give (for example a
classifier trained by fgvc, wrapped in ``PenultimateFeatures``). It is a *classifier-feature
Frechet distance*, comparable only between numbers computed with the same extractor, image
counts and preprocessing; it is not FID. ``inception_fid`` is true FID (Inception-v3 pool
features, via torchmetrics / torch-fidelity) when those packages and weights are present.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fgvc.errors import UserError
from fgvc.gan.checkpoint import list_checkpoints
from fgvc.gan.synthesize import load_generator, sample

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between N(mu1, S1) and N(mu2, S2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mean/covariance shapes differ: {mu1.shape}, {mu2.shape}, {s1.shape}, {s2.shape}")
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # singular product (fewer images than feature dimensions): nudge both away from singular
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    # round-off makes tiny imaginary parts; the true square root of a product of PSD matrices is real
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64; needs N >= 2."""
    f = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise UserError(f"Frechet distance needs at least 2 feature vectors (N, D), got shape {f.shape}; use more images")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _batches(images: Tensor | Dataset | Iterable, batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        yield from images.split(batch_size)
        return
    if isinstance(images, Dataset):
        images = DataLoader(images, batch_size=batch_size, shuffle=False)
    for batch in images:
        yield batch[0] if isinstance(batch, list | tuple) else batch


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Tensor | Dataset | Iterable, batch_size: int = 64,
                     device: str | torch.device = "cpu") -> Tensor:
    """Features (N, D) of images in [0, 1]: a tensor (N, 3, H, W), a Dataset of (image, label) or batches."""
    was_training = extractor.training
    extractor.eval().to(device)
    out = [extractor(x.to(device).float()).flatten(1).cpu() for x in _batches(images, batch_size)]
    extractor.train(was_training)
    if not out:
        raise UserError("no images to compute features of; pass a non-empty image set")
    return torch.cat(out)


def classifier_frechet_distance(extractor: nn.Module, real: Tensor | Dataset | Iterable,
                                fake: Tensor | Dataset | Iterable, batch_size: int = 64,
                                device: str | torch.device = "cpu") -> float:
    """Classifier-feature Frechet distance (not FID) between real and generated images in [0, 1]."""
    mu_r, s_r = feature_statistics(extract_features(extractor, real, batch_size, device))
    mu_f, s_f = feature_statistics(extract_features(extractor, fake, batch_size, device))
    return frechet_distance(mu_r, s_r, mu_f, s_f)


class PenultimateFeatures(nn.Module):
    """Wrap a classifier on [0, 1] images so it returns the input of its last nn.Linear (N, D)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UserError(f"{type(model).__name__} has no nn.Linear head to take features before; pass a feature extractor")
        self.model, self.head = model, linears[-1]
        # a new Module starts in train mode; take the model's, so that extract_features, which
        # restores the mode it found, leaves an eval-mode classifier in eval mode
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handle = self.head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return captured[-1].flatten(1)


def frechet_over_checkpoints(run_dir: str | Path, extractor: nn.Module, real: Tensor | Dataset | Iterable,
                             per_class: int, seed: int = 0, device: str | torch.device = "cpu",
                             batch_size: int = 64) -> list[tuple[int, float]]:
    """[(iteration, classifier-feature Frechet distance)] of every kept checkpoint's EMA generator to ``real``.

    Each checkpoint generates ``per_class`` images of every class from the same noise, so the
    numbers differ only by the generator; give ``real`` the same class balance and a similar count.
    Train with ``keep_checkpoints=0`` to keep every checkpoint.
    """
    mu_r, s_r = feature_statistics(extract_features(extractor, real, batch_size, device))
    out = []
    for folder in list_checkpoints(Path(run_dir)):
        iteration = int(folder.name.removeprefix("iter_"))
        g = load_generator(run_dir, device=device, iteration=iteration)
        fake = sample(g, range(g.n_classes), per_class, seed=seed, batch_size=batch_size)
        mu_f, s_f = feature_statistics(extract_features(extractor, fake, batch_size, device))
        out.append((iteration, frechet_distance(mu_r, s_r, mu_f, s_f)))
    if not out:
        raise UserError(f"GAN run {run_dir} has no checkpoint yet; let `fgvc gan train` reach a checkpoint first")
    return out


def inception_fid(real: Tensor | Dataset | Iterable, fake: Tensor | Dataset | Iterable, batch_size: int = 64,
                  device: str | torch.device = "cpu") -> float:
    """True FID (Inception-v3 pool3, torchmetrics) of images in [0, 1]; UserError when unavailable offline."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise UserError(
            "true FID needs torchmetrics with torch-fidelity (pip install 'torchmetrics[image]'); "
            "use classifier_frechet_distance for an offline number"
        ) from None
    weights = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS
    if not weights.is_file():
        raise UserError(
            f"true FID needs the Inception weights {INCEPTION_WEIGHTS} in {weights.parent}; "
            "run it once with network access, or use classifier_frechet_distance offline"
        )
    try:
        metric = FrechetInceptionDistance(feature=2048, normalize=True).to(device)
    except (ImportError, ModuleNotFoundError) as e:  # torchmetrics installed without torch-fidelity
        raise UserError(f"true FID needs torch-fidelity ({e}); pip install 'torchmetrics[image]'") from None
    for is_real, images in ((True, real), (False, fake)):
        for x in _batches(images, batch_size):
            metric.update(x.to(device).float(), real=is_real)
    return float(metric.compute())
