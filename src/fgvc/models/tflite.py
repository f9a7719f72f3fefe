"""TensorFlow Lite import for the MobileNet family: a quantised .tflite file -> timm weights.

The file is read with the ``tflite`` package (the flatbuffer schema's Python bindings, no
TensorFlow). Weights and biases are dequantised, ``w = scale * (q - zero_point)`` per tensor
or per channel along the quantised dimension. TensorFlow stores convolutions as (O, H, W, I)
and depthwise ones as (1, H, W, C); PyTorch wants (O, I, H, W) and (C, 1, H, W).

The graph's convolutions, in execution order, map one to one onto the ``nn.Conv2d`` modules
of the matching timm model built with TensorFlow 'SAME' padding (``tf_mobilenetv2_100`` in
fgvc.models.factory), and its final 1x1 convolution (or fully connected layer) onto the linear head; every shape and
stride is checked. BatchNorm was folded into each convolution's bias: the BatchNorm after
each convolution gets gamma 1, beta = bias, mean 0 and variance 1 - eps, so the eval-mode
network computes exactly ``conv(x) + bias`` (fgvc.models.batchnorm re-estimates the
statistics before fine-tuning). The input quantisation (scale s, zero point z on uint8
pixels) becomes the model's normalisation: mean z / 255, std 1 / (255 s).

``reference_forward`` runs the dequantised graph op by op in float with its own 'SAME'
padding arithmetic: an independent execution the port is checked against.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fgvc.errors import UserError
from fgvc.models.factory import TF_PORTS

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "RESHAPE",
                 "SOFTMAX", "QUANTIZE", "DEQUANTIZE")


@dataclass
class Op:
    """One operator: its kind, tensor indices, and for convolutions the float weights (PyTorch layout)."""
    kind: str
    inputs: list[int]
    outputs: list[int]
    weight: torch.Tensor | None = None  # conv (O, I, kh, kw); depthwise (C, 1, kh, kw)
    bias: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: str = "SAME"
    activation: str = "NONE"
    pool: tuple[int, int] = (1, 1)


@dataclass
class Graph:
    ops: list[Op]
    input_index: int
    output_index: int
    input_scale: float
    input_zero_point: int

    @property
    def mean_std(self) -> tuple[list[float], list[float]]:
        mean, std = self.input_zero_point / 255.0, 1.0 / (255.0 * self.input_scale)
        return [mean] * 3, [std] * 3

    @property
    def convs(self) -> list[Op]:
        return [op for op in self.ops if op.weight is not None]


def read_graph(path: str | Path) -> Graph:
    """Parse and dequantise a .tflite file (cached per path, size and mtime: a changed file is read again).

    Errors (UserError): the file is missing, is not a TensorFlow Lite flatbuffer, or uses an
    operator outside ``SUPPORTED_OPS`` (the MobileNet family's).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"TensorFlow Lite file {path} {what}; check the path to the .tflite file")
    st = path.stat()
    return _parse_cached(str(path.resolve()), st.st_size, st.st_mtime)


@functools.lru_cache(maxsize=4)
def _parse_cached(path: str, size: int, mtime: float) -> Graph:
    return _parse(Path(path))


def _parse(path: Path) -> Graph:
    try:
        import tflite
    except ImportError:
        raise UserError("reading TensorFlow Lite files needs the tflite package: pip install tflite") from None
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TensorFlow Lite file (no TFL3 identifier)")
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)

    def tensor_values(index: int) -> torch.Tensor:
        t = graph.Tensors(index)
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        dtype = {tflite.TensorType.UINT8: np.uint8, tflite.TensorType.INT8: np.int8,
                 tflite.TensorType.INT32: np.int32, tflite.TensorType.FLOAT32: np.float32}[t.Type()]
        q = np.frombuffer(np.asarray(data).tobytes(), dtype=dtype).reshape(t.ShapeAsNumpy()).astype(np.float64)
        quant = t.Quantization()
        if dtype is not np.float32 and quant is not None and quant.ScaleLength():
            scale, zero = quant.ScaleAsNumpy().astype(np.float64), quant.ZeroPointAsNumpy().astype(np.float64)
            shape = [1] * q.ndim
            if scale.size > 1:  # per channel along the quantised dimension
                shape[quant.QuantizedDimension()] = -1
            q = (q - zero.reshape(shape)) * scale.reshape(shape)
        return torch.from_numpy(q.astype(np.float32))

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        if kind not in SUPPORTED_OPS:
            raise UserError(f"{path} uses the TensorFlow Lite operator {kind}; fgvc imports the MobileNet family "
                            f"({', '.join(SUPPORTED_OPS)})")
        ins, outs = op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist()
        item = Op(kind, ins, outs)
        options = op.BuiltinOptions()
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opt = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
            opt.Init(options.Bytes, options.Pos)
            w = tensor_values(ins[1])
            item.weight = w.permute(0, 3, 1, 2) if kind == "CONV_2D" else w.permute(3, 0, 1, 2)
            item.bias = tensor_values(ins[2]) if len(ins) > 2 and ins[2] >= 0 else torch.zeros(item.weight.shape[0])
            item.stride = (opt.StrideH(), opt.StrideW())
            item.padding = "SAME" if opt.Padding() == tflite.Padding.SAME else "VALID"
            item.activation = _activation(tflite, opt.FusedActivationFunction())
        elif kind == "FULLY_CONNECTED":  # a classifier stored as (O, I): kept as a 1x1 convolution
            opt = tflite.FullyConnectedOptions()
            opt.Init(options.Bytes, options.Pos)
            item.weight = tensor_values(ins[1])[:, :, None, None]
            item.bias = tensor_values(ins[2]) if len(ins) > 2 and ins[2] >= 0 else torch.zeros(item.weight.shape[0])
            item.activation = _activation(tflite, opt.FusedActivationFunction())
        elif kind == "AVERAGE_POOL_2D":
            opt = tflite.Pool2DOptions()
            opt.Init(options.Bytes, options.Pos)
            item.pool = (opt.FilterHeight(), opt.FilterWidth())
            item.stride = (opt.StrideH(), opt.StrideW())
            item.padding = "SAME" if opt.Padding() == tflite.Padding.SAME else "VALID"
            item.activation = _activation(tflite, opt.FusedActivationFunction())
        elif kind == "ADD":
            opt = tflite.AddOptions()
            opt.Init(options.Bytes, options.Pos)
            item.activation = _activation(tflite, opt.FusedActivationFunction())
        ops.append(item)
    inp = graph.Tensors(graph.Inputs(0))
    quant = inp.Quantization()
    scale = float(quant.ScaleAsNumpy()[0]) if quant is not None and quant.ScaleLength() else 1 / 255.0
    zero = int(quant.ZeroPointAsNumpy()[0]) if quant is not None and quant.ZeroPointLength() else 0
    return Graph(ops, graph.Inputs(0), graph.Outputs(0), scale, zero)


def _activation(tflite, code: int) -> str:
    names = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")}
    name = names.get(code, str(code))
    if name not in ("NONE", "RELU", "RELU6"):
        raise UserError(f"TensorFlow Lite activation {name} is not supported by fgvc's import")
    return name


def input_normalization(path: str | Path) -> tuple[list[float], list[float]]:
    """(mean, std) per channel on [0, 1] pixels, from the file's input quantisation."""
    return read_graph(path).mean_std


def state_dict_for(model, path: str | Path) -> dict[str, torch.Tensor]:
    """The file's weights keyed by ``model.net``'s parameter names (a fgvc Classifier).

    Errors (UserError): the model is not built with 'SAME' padding for this file, or its
    convolutions do not match the file's in number, shape or stride.
    """
    path = Path(path).expanduser()
    if model.name not in TF_PORTS:
        raise UserError(f"TensorFlow Lite weights need TensorFlow's 'SAME' padding: use model.name="
                        f"{' or '.join(TF_PORTS)} instead of {model.name} (the same weights without it agree with "
                        "the original only 70-89% of the time)")
    graph = read_graph(path)
    convs = graph.convs
    modules = list(model.net.named_modules())
    targets = [(i, name, m) for i, (name, m) in enumerate(modules) if isinstance(m, nn.Conv2d)]
    if len(targets) + 1 != len(convs):
        raise UserError(f"{path} has {len(convs)} convolutions, {model.name} has {len(targets)} plus a linear head; "
                        "the file is another architecture (or width) of the family")
    state: dict[str, torch.Tensor] = {}
    strides = model_strides([op.stride for op in convs[:-1]], getattr(model, "output_stride", 32))
    for (i, name, conv), op, stride in zip(targets, convs[:-1], strides):
        if tuple(conv.weight.shape) != tuple(op.weight.shape) or tuple(conv.stride) != stride:
            raise UserError(f"{path}: convolution {name} of {model.name} is {tuple(conv.weight.shape)} stride "
                            f"{tuple(conv.stride)}, the file's is {tuple(op.weight.shape)} stride {op.stride}"
                            + (f" (stride {stride} at model.output_stride={model.output_stride})"
                               if stride != op.stride else ""))
        state[f"{name}.weight"] = op.weight
        bn_name, bn = next(((n, m) for n, m in modules[i + 1:] if isinstance(m, _BatchNorm)), (None, None))
        if bn is None:
            raise UserError(f"{model.name} has no BatchNorm after {name} to carry the file's folded bias")
        state[f"{bn_name}.weight"] = torch.ones_like(op.bias)
        state[f"{bn_name}.bias"] = op.bias
        state[f"{bn_name}.running_mean"] = torch.zeros_like(op.bias)
        state[f"{bn_name}.running_var"] = torch.full_like(op.bias, 1.0 - bn.eps)  # + eps = 1: exactly identity
    head = convs[-1]
    state[f"{model.head_path}.weight"] = head.weight.flatten(1)
    state[f"{model.head_path}.bias"] = head.bias
    return state


def model_strides(file_strides: list[tuple[int, int]], output_stride: int = 32) -> list[tuple[int, int]]:
    """The strides the model's convolutions have for the file's: as in the file until the product reaches
    ``output_stride``, 1 after it (timm's builder turns each later stride into a dilation)."""
    reached, out = 1, []
    for stride in file_strides:
        if reached * max(stride) > output_stride:
            stride = (1, 1)
        reached *= max(stride)
        out.append(stride)
    return out


def num_classes(path: str | Path) -> int:
    """Outputs of the file's classifier (1001 for ImageNet files: index 0 is 'background')."""
    return read_graph(path).convs[-1].weight.shape[0]


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TensorFlow: out = ceil(size / stride); total = max((out - 1) * stride + kernel - size, 0);
    # the extra pixel of an odd total goes after (bottom / right)
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_padding(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """F.pad amounts (left, right, top, bottom) of TensorFlow's 'SAME' padding."""
    top, bottom = _same_pad(h, kernel[0], stride[0])
    left, right = _same_pad(w, kernel[1], stride[1])
    return left, right, top, bottom


@torch.no_grad()
def reference_forward(path: str | Path, x: torch.Tensor, until: str = "logits") -> torch.Tensor:
    """Run the dequantised graph op by op in float on (B, 3, H, W) images in [0, 1].

    ``until='logits'`` returns the final convolution's output (B, classes) before softmax;
    ``until='features'`` the pooled features (B, C) that feed it. Independent of timm: its
    own 'SAME' padding and layer order, so the port can be checked against it.
    """
    graph = read_graph(path)
    mean, std = graph.mean_std
    values = {graph.input_index: (x - mean[0]) / std[0]}
    act = {"NONE": lambda t: t, "RELU": F.relu, "RELU6": lambda t: t.clamp(0, 6)}
    last_conv = graph.convs[-1]
    for op in graph.ops:
        a = values.get(op.inputs[0])
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            if op is last_conv and until == "features":
                return a.flatten(1)
            k = op.weight.shape[-2:]
            if op.padding == "SAME":
                a = F.pad(a, same_padding(a.shape[-2], a.shape[-1], k, op.stride))
            groups = a.shape[1] if op.kind == "DEPTHWISE_CONV_2D" else 1
            out = F.conv2d(a, op.weight, op.bias, stride=op.stride, groups=groups)
        elif op.kind == "FULLY_CONNECTED":
            if op is last_conv and until == "features":
                return a.flatten(1)
            out = F.linear(a.flatten(1), op.weight.flatten(1), op.bias)
        elif op.kind == "ADD":
            out = a + values[op.inputs[1]]
        elif op.kind == "AVERAGE_POOL_2D":
            if op.padding != "VALID":
                raise UserError("reference_forward supports VALID average pooling only")
            out = F.avg_pool2d(a, op.pool, op.stride)
        elif op.kind == "RESHAPE":
            out = a.flatten(1)
        elif op.kind == "SOFTMAX":
            return a  # logits: the softmax is left to the caller
        else:  # QUANTIZE / DEQUANTIZE: identity in float
            out = a
        values[op.outputs[0]] = act[op.activation](out)
    return values[graph.output_index]


__all__ = ["Graph", "input_normalization", "model_strides", "num_classes", "read_graph", "reference_forward", "same_padding",
           "state_dict_for"]
