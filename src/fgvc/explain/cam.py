"""Where a classifier looks: CAM (Zhou et al. 2016), Grad-CAM (Selvaraju et al. 2017), Grad-CAM++.

Every function returns maps of shape (B, H, W), float32 in [0, 1], at the input's size
(bilinear upsampling of the feature-resolution map, then per-image min-max; a flat map
becomes all zero). ``target`` is the class explained: the predicted class when None, an
int for the whole batch, or one class per sample (list or (B,) tensor).

Guarantees, whatever happens inside (exceptions included): the forward hook is removed,
every module's train/eval flag is restored, parameters' ``requires_grad`` and ``.grad``
are untouched (gradients are taken with ``torch.autograd.grad`` with respect to the
hooked activation only), and the functions work under a caller's ``torch.no_grad()``
or ``torch.inference_mode()`` (gradients are switched back on inside). The model runs
in eval mode, so dropout is off and batch norm uses its running statistics: a map does
not depend on the other images of the batch.

pytorch-grad-cam (1.5) is not used at run time: it leaves the model in eval mode, calls
``model.zero_grad()`` and ``backward()`` (clobbering the caller's ``.grad``), fails under
``no_grad`` and its context manager swallows IndexError (an out-of-range target). The
tests use it as the reference implementation instead.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from fgvc.errors import UserError
from fgvc.explain.attention import attention
from fgvc.explain.maps import Target, normalize_maps
from fgvc.models.freeze import eval_with_grad

GRADCAM_METHODS = ("gradcam", "gradcam++")


def cam(model: nn.Module, x: Tensor, target: Target = None, relu: bool = False) -> Tensor:
    """Classic CAM: sum_k w[target, k] * A_k over the last conv map A; (B, H, W) in [0, 1].

    Needs a network that ends in global average pooling + one linear layer (ResNet,
    ResNeXt); anything else raises UserError pointing to Grad-CAM. ``relu=True`` drops
    negative evidence before normalising, as Grad-CAM does (then the two are equal for
    such networks).
    """
    head, features = check_cam(model)
    with eval_with_grad(model):
        acts = []
        handle = features.register_forward_hook(lambda m, i, o: acts.append(o))
        try:
            with torch.no_grad():  # CAM needs no gradient
                logits = model(x)
        finally:
            handle.remove()
        if len(acts) != 1 or not isinstance(acts[0], Tensor) or acts[0].dim() != 4:
            raise UserError(_no_cam(model, "its feature module does not give one (B, C, h, w) map per forward pass"))
        # swin-like stages are (B, h, w, C): read as (B, C, h, w) they would give h channels
        a = to_grid(model, acts[0], x.shape[-2:], getattr(model, "feature_path", "feature module"), features).float()
        if a.shape[1] != head.in_features:
            raise UserError(_no_cam(model, f"its last feature map has {a.shape[1]} channels but the final "
                                           f"linear layer takes {head.in_features}"))
        t = _targets(logits, target)
        w = head.weight.detach().float()[t]  # (B, K)
        maps = torch.einsum("bk,bkhw->bhw", w, a)
        # GAP + linear means mean_ij(CAM) + bias == logit; anything in between (a norm, an MLP,
        # max pooling) breaks it, and then CAM would silently explain a different function.
        bias = head.bias.detach().float()[t] if head.bias is not None else torch.zeros_like(t, dtype=torch.float32)
        expected = logits.detach().float().gather(1, t[:, None])[:, 0]
        got = maps.mean(dim=(1, 2)) + bias
        tol = 1e-3 if logits.dtype == torch.float32 else 3e-2  # a caller's fp16/bf16 autocast rounds the logits
        if not torch.allclose(got, expected, rtol=tol, atol=tol * max(1.0, expected.abs().max().item())):
            raise UserError(_no_cam(model, "its logits are not the global average of the last feature map "
                                           "times the final linear layer"))
        if relu:
            maps = maps.clamp_min(0)
        return normalize_maps(maps, x.shape[-2:])


def gradcam(model: nn.Module, x: Tensor, target: Target = None, layer: str | nn.Module | None = None,
            method: str = "gradcam") -> Tensor:
    """Grad-CAM (``method="gradcam"``) or Grad-CAM++ (``"gradcam++"``) at ``layer``; (B, H, W) in [0, 1].

    ``layer`` is a module or its dotted name (inside ``model.net`` or ``model``); by default
    the last conv stage of a CNN, or for a ViT the last block's first norm (the last
    block's output reaches the class token only through that token, so other tokens get
    no gradient there). ViT tokens are reshaped to the patch grid, prefix tokens dropped.
    """
    if method not in GRADCAM_METHODS:
        raise UserError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(GRADCAM_METHODS)}")
    module, name = resolve_layer(model, layer)
    with eval_with_grad(model):
        acts: list[Tensor] = []

        def hook(mod, inputs, output):
            if not isinstance(output, Tensor):
                raise UserError(f"layer {name!r} returns {type(output).__name__}, not a tensor; pick another layer")
            # A fresh leaf: its gradient exists even with frozen parameters or a caller's
            # no_grad input, and autograd.grad to it never writes any parameter's .grad.
            leaf = output.detach().requires_grad_(True)
            acts.append(leaf)
            return leaf.clone()  # in-place ops downstream (ReLU(inplace)) must not alter the leaf

        handle = module.register_forward_hook(hook)
        try:
            # an inference-mode tensor cannot enter a graph; a clone made here is an ordinary one
            logits = model(x.clone() if x.is_inference() else x)
        finally:
            handle.remove()
        # a method whose inference runs the backbone again on attention crops (WS-DAN, CAL): its first pass
        # is the whole image, the map aligned with the input; the crops' boxes pass no gradient back to it
        if len(acts) != 1 and not (acts and getattr(model, "first_pass_is_the_image", False)):
            how = "is not used in" if not acts else f"runs {len(acts)} times in"
            raise UserError(f"layer {name!r} {how} the forward pass; pick a layer that runs once")
        t = _targets(logits, target)
        score = logits.gather(1, t[:, None]).sum()  # samples are independent in eval mode
        (grad,) = torch.autograd.grad(score, acts[0], allow_unused=True)
        a = acts[0].detach()
        grad = torch.zeros_like(a) if grad is None else grad
        a, grid_grad = to_grid(model, a, x.shape[-2:], name, module), to_grid(model, grad, x.shape[-2:], name, module)
        if grad.dim() == 3 and grad.any() and not grid_grad.any():
            # a token-pooled transformer's last block output reaches the head only through the
            # class token: every map would be zero, which says nothing about where the model looks
            blocks = getattr(getattr(model, "net", model), "blocks", None)
            last = len(blocks) - 1 if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) else None
            hint = f" (layer='blocks.{last}.norm1')" if last is not None and hasattr(blocks[last], "norm1") else ""
            raise UserError(f"layer {name!r} reaches the prediction only through the class token, so its patch "
                            f"tokens get no gradient; pick the last block's first norm{hint}, as fgvc does for a ViT")
        a, grad = a.float(), grid_grad.float()
        if method == "gradcam":
            weights = grad.mean(dim=(2, 3))
        else:
            weights = _gradcampp_weights(a, grad)
        maps = torch.einsum("bk,bkhw->bhw", weights, a).clamp_min(0)
        return normalize_maps(maps, x.shape[-2:])


def explain(model: nn.Module, x: Tensor, method: str, target: Target = None) -> Tensor:
    """Maps by method name: 'cam', 'gradcam' or 'gradcam++'; (B, H, W) in [0, 1]."""
    try:
        fn = METHODS[method]
    except KeyError:
        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown explanation method {method!r}{hint}; choose one of {', '.join(METHODS)}") from None
    return fn(model, x, target)


METHODS: dict[str, Callable[..., Tensor]] = {
    "cam": cam,
    "gradcam": lambda model, x, target=None: gradcam(model, x, target, method="gradcam"),
    "gradcam++": lambda model, x, target=None: gradcam(model, x, target, method="gradcam++"),
    "attention": attention,  # a method's own maps (WS-DAN, CAL; fgvc.explain.attention)
}


def check_cam(model: nn.Module) -> tuple[nn.Linear, nn.Module]:
    """``(head, feature_module)`` of a model CAM can explain, else UserError pointing to Grad-CAM."""
    if getattr(model, "family", None) == "vit":
        raise UserError(_no_cam(model, "it is a vision transformer"))
    # a head of fgvc.methods on the feature map: CAM applies only where its inference is GAP + linear (API-Net's)
    if getattr(model, "method", "plain") != "plain" and not getattr(model, "gap_linear_inference", False):
        raise UserError(_no_cam(model, f"its head (method.name={model.method}) is not global average pooling + "
                                       "a linear layer"))
    features = getattr(model, "feature_module", None)
    head = getattr(model, "head", None)
    if features is None or not isinstance(head, nn.Linear):
        raise UserError(_no_cam(model, "it has no known last feature map and linear head"))
    return head, features


def supports_cam(model: nn.Module) -> bool:
    """Whether ``model`` has the structure CAM needs (a feature module and a linear head, not a ViT)."""
    try:
        check_cam(model)
        return True
    except UserError:
        return False




# --- internals -------------------------------------------------------------------------


def _targets(logits: Tensor, target: Target) -> Tensor:
    """(B,) long tensor of classes on the logits' device; argmax when None; UserError if out of range."""
    b, c = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(b)
    if t.numel() != b:
        raise UserError(f"got {t.numel()} targets for a batch of {b} images; give one class or one per image")
    if (t < 0).any() or (t >= c).any():
        raise UserError(f"target class {t[(t < 0) | (t >= c)][0].item()} is out of range; the model has "
                        f"{c} classes (0 to {c - 1})")
    return t.clone()


def _no_cam(model: nn.Module, why: str) -> str:
    name = getattr(model, "name", type(model).__name__)
    return (f"CAM needs a CNN that ends in global average pooling and one linear layer, and {name} does not "
            f"({why}); use Grad-CAM instead (gradcam / method 'gradcam' or 'gradcam++')")


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[nn.Module, str]:
    """(module, name) of the layer a CAM reads: ``layer`` (a module or a dotted name inside the network),
    or by default the model's last spatial feature map (a ViT's last block). UserError when there is none."""
    net = getattr(model, "net", model)
    if isinstance(layer, nn.Module):
        return layer, type(layer).__name__
    if layer is None:
        if getattr(model, "family", None) == "vit":
            if hasattr(net, "blocks") and hasattr(net.blocks[-1], "norm1"):  # timm
                return net.blocks[-1].norm1, "blocks.-1.norm1"
            if hasattr(net, "blocks") and hasattr(net.blocks[-1], "ln_1"):  # open_clip's tower (model.name=clip:...)
                if not getattr(net.visual.transformer, "batch_first", True):
                    raise UserError(f"Grad-CAM needs {model.name}'s tokens batch first; this open_clip version "
                                    "keeps them sequence first")
                return net.blocks[-1].ln_1, "blocks.-1.ln_1"
            if hasattr(net, "encoder") and hasattr(net.encoder, "layers"):  # torchvision
                return net.encoder.layers[-1].ln_1, "encoder.layers.-1.ln_1"
        features = getattr(model, "feature_module", None)
        if features is not None:
            return features, getattr(model, "feature_path", "feature_module")
        raise UserError(f"no default Grad-CAM layer known for {getattr(model, 'name', type(model).__name__)}; "
                        f"pass layer= one of {', '.join(_layer_examples(net))}")
    for root in (net, model):
        try:
            return root.get_submodule(layer), layer
        except AttributeError:
            continue
    names = [n for n, _ in net.named_modules() if n]
    close = difflib.get_close_matches(layer, names, n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UserError(f"no layer {layer!r} in the model{hint}; valid names include {', '.join(_layer_examples(net))}")


def _layer_examples(net: nn.Module, n: int = 6) -> list[str]:
    """The last few modules two levels deep: the layers worth explaining are near the end."""
    names = [name for name, _ in net.named_modules() if name and name.count(".") <= 1]
    return names[-n:]


def to_grid(model: nn.Module, t: Tensor, size, name: str, module: nn.Module | None = None) -> Tensor:
    """A layer's output as a (B, C, h, w) map of the input grid.

    (B, C, h, w) stays; (B, h, w, C) (swin, swinv2, MambaOut, Sequencer stages, channels-last
    MLPs inside ConvNeXt blocks) is permuted; transformer tokens (B, N, D) are reshaped to
    the patch grid without their prefix (class, register) tokens.
    """
    if t.dim() == 4:
        return t if _channels_first(model, module, t, size, name) else t.permute(0, 3, 1, 2)
    if t.dim() != 3:
        raise UserError(f"layer {name!r} gives a {t.dim()}-d output; Grad-CAM needs (B, C, h, w) or (B, h, w, C) "
                        "maps or (B, tokens, dim) transformer tokens")
    net = getattr(model, "net", model)
    _check_hiera_layer(net, module, name)
    n = t.shape[1]
    patch = getattr(getattr(net, "patch_embed", None), "patch_size", None) or getattr(net, "patch_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        gh, gw = size[0] // ph, size[1] // pw
    else:  # no patch size (Hiera's last stage, for one): the grid of the input's shape the tokens fill
        grid = _token_grid(n, size, getattr(net, "num_prefix_tokens", None))
        if grid is None:
            raise UserError(f"layer {name!r} has {n} tokens, which form no grid of the {size[0]}x{size[1]} input; "
                            "pick a layer with (B, C, h, w) maps")
        gh, gw = grid
    prefix = n - gh * gw
    if prefix < 0:
        raise UserError(f"layer {name!r} has {n} tokens, fewer than the {gh}x{gw} patch grid; pick a block's norm layer")
    # prefix tokens (class, registers) come first in timm and torchvision ViTs
    return t[:, prefix:].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)


def _channels_first(model: nn.Module, module: nn.Module | None, t: Tensor, size, name: str) -> bool:
    """Whether a 4-d output is (B, C, h, w) rather than (B, h, w, C).

    The shape decides when only one reading is a grid of the input; a square map with as
    many channels as rows is settled by the layer's type, then by the network's declared
    output format (timm's ``output_fmt``), then by PyTorch's convention, channels first.
    """
    first, last = _is_grid(t.shape[2], t.shape[3], size), _is_grid(t.shape[1], t.shape[2], size)
    if first != last:
        return first
    if not first:
        raise UserError(f"layer {name!r} gives a map of shape {tuple(t.shape)}, which is no grid of the "
                        f"{size[0]}x{size[1]} input with channels first or last; pick another layer")
    if isinstance(module, (nn.Conv2d, nn.modules.batchnorm._BatchNorm)):
        return True
    if isinstance(module, nn.Linear):
        return False
    return str(getattr(getattr(model, "net", model), "output_fmt", "NCHW")) != "NHWC"


def _is_grid(h: int, w: int, size) -> bool:
    """Whether an h x w map is the grid of an image of ``size`` at one stride s (each side within a cell of size / s)."""
    height, width = int(size[0]), int(size[1])
    if not (1 <= h <= height and 1 <= w <= width):
        return False
    # |height / s - h| <= 1 and |width / s - w| <= 1: the two ranges of s must overlap
    lo = max(height / (h + 1), width / (w + 1))
    hi = min(height / (h - 1) if h > 1 else math.inf, width / (w - 1) if w > 1 else math.inf)
    return lo <= hi


def _token_grid(n: int, size, num_prefix: int | None) -> tuple[int, int] | None:
    """(gh, gw) with gh * gw = n - prefix, in the input's aspect, for the model's prefix count (or 0, 1)."""
    for prefix in dict.fromkeys(p for p in (num_prefix, 0, 1) if p is not None):
        cells = n - prefix
        if cells < 1:
            continue
        gh = max(1, round(math.sqrt(cells * size[0] / size[1])))
        if cells % gh == 0 and _is_grid(gh, cells // gh, size):
            return gh, cells // gh
    return None


def _check_hiera_layer(net: nn.Module, module: nn.Module | None, name: str) -> None:
    """Hiera keeps its tokens in mask-unit order until its last stage; only there are they a raster grid."""
    stage_ends = getattr(net, "stage_ends", None)
    blocks = getattr(net, "blocks", None)
    if module is None or stage_ends is None or blocks is None or type(net).__name__ != "Hiera":
        return
    # the unroll is undone one pooling at a time: only when every stage but the first pools
    # (timm's default q_pool) is the last stage back in raster order
    all_pooled = getattr(net, "q_pool", None) == len(stage_ends) - 1
    first_raster = (stage_ends[-2] + 1 if len(stage_ends) > 1 else 0) if all_pooled else len(blocks)
    if any(module is m for i, b in enumerate(blocks) if i < first_raster for m in b.modules()):
        where = f"pick a layer of its last stage (blocks.{first_raster} or later)" if all_pooled else \
            "with fewer pooling stages than stages (q_pool) no block is; use a CNN or a ViT for maps"
        raise UserError(f"layer {name!r} of Hiera holds its tokens in mask-unit order, not as an image grid; {where}")


def _gradcampp_weights(a: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM++ channel weights (Chattopadhay et al. 2018, eq. 19, the exp-score closed form)."""
    g2 = grad.pow(2)
    g3 = g2 * grad
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + 1e-6)  # same epsilon as pytorch-grad-cam, for comparability
    alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grad.clamp_min(0)).sum(dim=(2, 3))
