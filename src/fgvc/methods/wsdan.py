"""wsdan: WS-DAN, weakly supervised data augmentation network (Hu, Qi, Huang and Lu 2019, "See Better
Before Looking Closer", arXiv 1901.09891).

What it changes:

- the head: M attention maps from the backbone's feature map F (1x1 convolution + BatchNorm + ReLU);
  bilinear attention pooling, part features f_k = mean over locations of A_k * F (an (M, C) matrix
  per image), flattened, signed square root and L2 normalisation, then a bias-free linear classifier
  on 100 x the feature;
- the training step: the raw image's loss, plus one attention-cropped and one attention-dropped view
  of each image, guided by one of its attention maps each (drawn with probability proportional to
  sqrt of the map's sum), and the centre loss that ties each class's part features to a moving
  average centre: loss = (CE_raw + CE_crop + CE_drop) / 3 + w * sum ||f - c_y||^2 / B, the centres
  updated as c_y <- c_y + beta (f - normalize(c_y)) and kept as a buffer (in the checkpoint, so a
  resumed or reloaded run has them);
- inference: the average of the raw logits and the logits of the crop that the mean attention map
  locates (object localisation and refinement, paper section 3.5).

Cropping: the attention map is upsampled to the image (bilinear, corners aligned), thresholded at
theta x its maximum, and the box around the pixels above it, widened by ``padding`` x the side on
each edge, is cut out and resized back to the image's size. Here the cut and resize are one batched
``affine_grid`` + ``grid_sample`` (bilinear, corners aligned: the same pixels as slicing and
``interpolate``), so inference has no per-image Python loop and exports to ONNX.
Dropping: the pixels whose upsampled attention is >= theta x its maximum are set to 0.

Settings (config keys ``method.*``, defaults the authors'): ``attention_maps`` M = 32;
``crop_threshold`` [0.4, 0.6] and ``drop_threshold`` [0.2, 0.5] (theta drawn uniformly per image in
training); ``crop_padding`` 0.1 (training); ``test_crop_threshold`` 0.1 and ``test_crop_padding``
0.05 (inference); ``center_weight`` 1 and ``center_momentum`` beta = 0.05.

From the authors' code (GuYuc/WS-DAN.PyTorch, ``models/wsdan.py``, ``train.py``, ``utils.py``; the
paper leaves these out): the attention block is a BasicConv2d (conv without bias, BatchNorm with
eps 1e-3, ReLU); the part features are scaled by 100 before the bias-free classifier; the two maps
of an image are drawn with replacement, weights sqrt(sum A_k) L1-normalised; the crop pads the box
by 0.1 of the side (0.05 at test time); the three cross-entropies are weighted 1/3 each; the centre
loss is the squared distance summed over features and averaged over images, on L2-normalised part
features, with centres starting at zero; the signed square root adds 1e-12. Differences, each
stated: a batch with several images of a class moves its centre by the mean of their steps (the
authors' indexed in-place update keeps one of them, unspecified which); the box includes its last
row and column (the authors' slice ends one pixel early) and is at least one pixel; the head reads the
backbone's last map (stride 32 for ResNets and MobileNetV2: 7 x 7 at 224 px, 14 x 14 at 448 px), where
the authors' default backbone is Inception-v3 up to Mixed_6e (``net='inception_mixed_6e'``: 768 channels
at stride 16, 26 x 26 at 448 px), so the attention maps, crops and drops here are about twice as coarse
unless ``model.output_stride=16`` dilates the backbone's last stage to a stride-16 map (docs/models.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc.methods.base import Method as BaseMethod
from fgvc.methods.bilinear import signed_sqrt_l2

FEATURE_SCALE = 100.0  # part features are scaled before the classifier (the authors' code)


def attention_pooling(fmap: Tensor, attention: Tensor, eps: float = 1e-12) -> Tensor:
    """Bilinear attention pooling: (B, C, h, w) features and (B, M, h, w) maps -> (B, M * C) part
    features, f[b, m, c] = mean_hw A[b, m] F[b, c], then signed square root and L2 normalisation."""
    h, w = fmap.shape[-2:]
    parts = torch.einsum("bmhw,bchw->bmc", attention, fmap) / (h * w)
    return signed_sqrt_l2(parts.flatten(1), eps)


def upsample(attention: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 1, h, w) -> (B, H, W): bilinear, corners aligned (the authors' ``upsample_bilinear``)."""
    return F.interpolate(attention, size=size, mode="bilinear", align_corners=True)[:, 0]


def crop_boxes(attention: Tensor, theta: Tensor, size: tuple[int, int], padding: float) -> Tensor:
    """(B, 4) int64 boxes [y0, y1, x0, x1) (pixels, end excluded) around the pixels of the upsampled map
    ``attention`` (B, 1, h, w) that reach ``theta`` (B,) x its maximum, widened by ``padding`` x the side
    on each edge and clipped to the image of ``size`` (H, W)."""
    height, width = size
    a = upsample(attention, size)
    peak = attention.flatten(1).amax(1)
    mask = a >= (theta.to(a.dtype) * peak)[:, None, None]

    def span(hit: Tensor, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.arange(n, device=hit.device)
        lo = torch.where(hit, idx, n).amin(1)
        hi = torch.where(hit, idx, -1).amax(1) + 1
        pad = int(padding * n)
        lo = (lo - pad).clamp(0, n - 1)
        return lo, torch.maximum((hi + pad).clamp(max=n), lo + 1)

    y0, y1 = span(mask.any(2), height)
    x0, x1 = span(mask.any(1), width)
    return torch.stack([y0, y1, x0, x1], dim=1)


def crop_resize(x: Tensor, boxes: Tensor) -> Tensor:
    """Each image's box [y0, y1, x0, x1) resized to the image's size, bilinear with corners aligned: the
    same as ``interpolate(x[..., y0:y1, x0:x1], size, align_corners=True)``, batched."""
    height, width = x.shape[-2:]
    b = boxes.to(x.dtype)

    def axis(lo: Tensor, hi: Tensor, n: int) -> tuple[Tensor, Tensor]:
        # output pixel p samples input pixel lo + p (hi - 1 - lo) / (n - 1); in [-1, 1] coordinates
        # (corners aligned) that is scale * u + shift
        scale = (hi - 1 - lo) / max(n - 1, 1)
        shift = (lo + hi - 1) / max(n - 1, 1) - 1
        return scale, shift

    sy, ty = axis(b[:, 0], b[:, 1], height)
    sx, tx = axis(b[:, 2], b[:, 3], width)
    zero = torch.zeros_like(sx)
    affine = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(affine, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def drop_mask(attention: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 1, H, W) bool: True where the upsampled map is >= ``theta`` (B,) x its maximum (dropped pixels)."""
    peak = attention.flatten(1).amax(1)
    return (upsample(attention, size) >= (theta.to(attention.dtype) * peak)[:, None, None])[:, None]


def pick_maps(maps: Tensor, count: int = 2) -> Tensor:
    """(B, M, h, w) -> (B, count, h, w): maps drawn per image with replacement, with probability
    proportional to sqrt(sum of the map) (the authors' code); from torch's global generator. An image whose
    maps hold nan or inf (a diverged network) draws from the maps uniformly."""
    weights = torch.sqrt(maps.detach().float().sum(dim=(2, 3)) + 1e-12)
    p = weights / weights.sum(1, keepdim=True)
    # multinomial refuses nan and inf (a RuntimeError; on a GPU a device-side assert that ends the process);
    # drawn uniformly instead, the step ends with the non-finite loss such maps give, which the training loop
    # turns into its one sentence (the loss diverged: lower train.lr), with no host sync here
    idx = torch.multinomial(torch.where(torch.isfinite(p), p, 1.0), count, replacement=True)
    return torch.gather(maps, 1, idx[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))


def uniform(low_high, n: int, device) -> Tensor:
    """(n,) thresholds drawn uniformly in [low, high] (torch's global generator)."""
    low, high = low_high
    return low + (high - low) * torch.rand(n, device=device)


@torch.no_grad()
def update_centers(centers: Tensor, parts: Tensor, labels: Tensor, momentum: float) -> Tensor:
    """Move each class's centre in place: c_k <- c_k + momentum * mean_{i: y_i = k} (f_i - normalize(c_k)).
    Returns the normalised centres of the batch's labels before the move (the centre loss's targets)."""
    normed = F.normalize(centers[labels], dim=-1)
    step = (parts.detach().float() - normed)
    total = torch.zeros_like(centers).index_add_(0, labels, step)
    count = torch.zeros(centers.shape[0], device=centers.device, dtype=centers.dtype).index_add_(
        0, labels, torch.ones_like(labels, dtype=centers.dtype))
    # every class moves by momentum * total / count; an absent class's total is 0, so it moves by exactly +0.0
    # (no boolean-mask indexing: its data-dependent shape would cost a host sync each step)
    centers += momentum * total / count.clamp_min(1)[:, None]
    return normed


def center_loss(parts: Tensor, targets: Tensor) -> Tensor:
    """sum of squared distances between part features and their centres, averaged over images."""
    return (parts.float() - targets).pow(2).sum() / parts.shape[0]


class AttentionHead(nn.Module):
    """Feature map -> (logits, part features (B, M * C), attention maps (B, M, h, w))."""

    eps = 1e-12  # under the signed square root (the authors' code)

    def __init__(self, channels: int, num_classes: int, dropout: float, maps: int):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv2d(channels, maps, 1, bias=False), nn.BatchNorm2d(maps, eps=1e-3),
                                       nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(maps * channels, num_classes, bias=False)
        # the classes' part-feature centres: a buffer, so checkpoints (resume, reload) carry them
        self.register_buffer("centers", torch.zeros(num_classes, maps * channels))

    def pool(self, fmap: Tensor, attention: Tensor) -> Tensor:
        return attention_pooling(fmap, attention, self.eps)

    def classify(self, parts: Tensor) -> Tensor:
        return self.fc(self.dropout(parts * FEATURE_SCALE))

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        maps = self.attention(fmap)
        parts = self.pool(fmap, maps)
        return self.classify(parts), parts, maps


class Method(BaseMethod):
    name_ = "wsdan"
    takes_mixing = False  # the centre loss and the crops need one class per image
    takes_adversarial = False  # three forward passes per step
    takes_ddp = False  # passes through the backbone outside the DDP wrapper; centres per process
    takes_compile = False  # the passes call attend, not forward: train.compile would compile evaluation only
    # loss.center would read the drop view's features against the raw logits, pairwise confusion each view apart
    takes_feature_losses = False
    scores = "three views of each image (raw, attention crop, attention drop) in a criterion call each"
    own_center_loss = "method.center_weight"

    def make_head(self, channels: int, num_classes: int, dropout: float, *, attention_maps: int = 32,
                  crop_threshold: tuple[float, float] = (0.4, 0.6), drop_threshold: tuple[float, float] = (0.2, 0.5),
                  crop_padding: float = 0.1, test_crop_threshold: float = 0.1, test_crop_padding: float = 0.05,
                  center_weight: float = 1.0, center_momentum: float = 0.05) -> nn.Module:
        return AttentionHead(channels, num_classes, dropout, attention_maps)

    def attend(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised images -> (logits, part features, attention maps) of one pass."""
        return self.head_module(self.features(x))

    def attention_maps(self, x: Tensor) -> Tensor:
        """Images in [0, 1] -> their (B, M, h, w) attention maps (``fgvc explain --method attention``)."""
        return self.head_module.attention(self.features(self.normalize(x)))

    def infer(self, x: Tensor) -> Tensor:
        logits, _, maps = self.attend(x)
        theta = torch.full((x.shape[0],), self.settings["test_crop_threshold"], device=x.device)
        boxes = crop_boxes(maps.mean(1, keepdim=True), theta, x.shape[-2:], self.settings["test_crop_padding"])
        refined = self.attend(crop_resize(x, boxes))[0]
        return (logits + refined) / 2

    def augment(self, x: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        """(attention-cropped, attention-dropped) views of the normalised images ``x``, one drawn map each."""
        s, size, n = self.settings, x.shape[-2:], x.shape[0]
        with torch.no_grad():
            picked = pick_maps(maps.float())
            boxes = crop_boxes(picked[:, :1], uniform(s["crop_threshold"], n, x.device), size, s["crop_padding"])
            crops = crop_resize(x, boxes)
            dropped = x * ~drop_mask(picked[:, 1:], uniform(s["drop_threshold"], n, x.device), size)
        return crops, dropped

    def centre_term(self, parts: Tensor, labels: Tensor) -> Tensor:
        """The weighted centre loss of the batch, after moving the centres (training only)."""
        head = self.head_module
        targets = update_centers(head.centers, parts, labels, self.settings["center_momentum"])
        return self.settings["center_weight"] * center_loss(parts, targets)

    def train_loss(self, x: Tensor, target: Tensor, criterion, forward) -> tuple[Tensor, Tensor]:
        x = self.normalize(x)
        logits, parts, maps = self.attend(x)
        crops, dropped = self.augment(x, maps)
        crop_logits, drop_logits = self.attend(crops)[0], self.attend(dropped)[0]
        ce = (criterion(logits, target) + criterion(crop_logits, target) + criterion(drop_logits, target)) / 3
        return ce + self.centre_term(parts, target.argmax(1)), logits
