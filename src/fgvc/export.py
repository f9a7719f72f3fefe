"""Export a run's model to ONNX, TorchScript or torch.export (.pt2), verified against PyTorch
(``--format hf``: a Hugging Face / timm model folder, see ``fgvc.export_hf``).

The exported model is the run's ``Classifier`` as it is: float32 RGB images in [0, 1],
NCHW at the run's ``data.image_size``, mean/std normalisation inside, logits out. After
writing, the artefact is loaded back with its own runtime (onnxruntime, ``torch.jit.load``,
``torch.export.load``) and run on fixed random batches; its logits must match the PyTorch
model's within ``tolerance``. A sidecar ``<file>.json`` says everything a deployment needs
without fgvc: classes, input size and range, preprocessing (``transforms.eval_preprocessing``:
the decode, EXIF turn, transparency on white, resize and crop that `fgvc predict` and eval
use), the difference measured, and the file's sha256 and size (the two files are renamed
one after the other, so a crash in between would leave a new model beside an old sidecar:
the hash tells).

Everything is written into a temp folder beside the output and renamed into place only after
the check passes, so a failed export leaves an existing file (and its sidecar) as it was.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fgvc import api, runs
from fgvc.data.transforms import eval_preprocessing
from fgvc.errors import UserError
from fgvc.export_hf import export_hf

# format -> file suffix; onnx first: the one runtime-neutral format, and the default
FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
# folder formats (fgvc.export_hf): a Hugging Face / timm model folder, written by its own exporter
FOLDER_FORMATS = ("hf",)
ALL_FORMATS = (*FORMATS, *FOLDER_FORMATS)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
DEFAULT_TOLERANCE = 1e-3  # max abs logit difference; float32 rounding is ~1e-6, a real bug is ~1
INPUT_NAME, OUTPUT_NAME = "images", "logits"
EXAMPLE_BATCH = 2  # a dynamic batch is traced at 2: at 1 tracers may specialise the size


def default_format(out: str | Path | None = None) -> str:
    """The format named by ``out``'s suffix, else onnx."""
    if out is not None:
        for fmt, suffix in FORMATS.items():
            if Path(out).suffix == suffix:
                return fmt
    return "onnx"


def sidecar_path(artefact: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + ".json")


def parse_batch(batch: str | int) -> int | None:
    """'dynamic' -> None; 'N' or N (>= 1) -> N."""
    if isinstance(batch, str) and batch.strip().lower() == "dynamic":
        return None
    try:
        n = int(batch)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UserError(f"--batch must be 'dynamic' or a positive whole number, got {batch!r}")
    return n


def export_model(run_dir: str | Path, fmt: str | None = None, out: str | Path | None = None,
                 batch: str | int = "dynamic", tolerance: float = DEFAULT_TOLERANCE,
                 checkpoint: str = "best") -> Path:
    """Write the run's model as ``fmt`` (default: from ``out``'s suffix, else onnx), verified; return its path.

    ``out`` defaults to ``RUN_DIR/export/model.<ext>``; a folder (an existing one, or a path ending in
    a separator) gets ``model.<ext>`` inside; a file must end in a format's suffix (.onnx/.pt/.pt2).
    ``batch`` is 'dynamic' or a fixed size;
    ``tolerance`` bounds the max abs logit difference to the PyTorch model on [0, 1] inputs.
    """
    fmt = fmt or default_format(out)
    if fmt not in ALL_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(ALL_FORMATS)}")
    if fmt == "hf":  # a folder for timm / the Hugging Face hub, checked by timm loading it back
        if str(batch).strip().lower() != "dynamic":
            raise UserError("--batch does not apply to --format hf (the folder holds weights, any batch works)")
        return export_hf(run_dir, out, tolerance=tolerance, checkpoint=checkpoint)
    fixed_batch = parse_batch(batch)
    if not tolerance > 0:
        raise UserError(f"--tolerance must be a positive number, got {tolerance}")
    if fmt == "onnx":
        _require_onnx()
    source = api.Run(run_dir)
    run_dir, cfg, class_names, size = source.dir, source.config, source.class_names, source.image_size
    out = _resolve_out(run_dir, fmt, out)
    # contiguous weights: an exported graph is a file for other runtimes, not for training's kernels
    model = source.model(checkpoint).to(memory_format=torch.contiguous_format)

    example = torch.rand(fixed_batch or EXAMPLE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    check_batches = (fixed_batch,) if fixed_batch else (1, 3)
    unchanged = f"nothing was written (the previous {out.name}, if any, is unchanged)"
    fix = f"try --format {' or '.join(f for f in FORMATS if f != fmt)}{'' if fixed_batch else ' or a fixed --batch N'}"
    tmp = runs.staging_dir(out)
    try:
        staged = tmp / out.name
        try:
            EXPORTERS[fmt](model, example, staged, dynamic=fixed_batch is None)
            run = LOADERS[fmt](staged)
        except UserError:
            raise
        except OSError as e:
            raise UserError(f"cannot write {out} ({e.strerror or e.__class__.__name__}); free disk space or "
                            f"fix the folder's permissions; {unchanged}") from None
        except Exception as e:
            raise UserError(f"exporting {cfg.model.name} to {fmt} failed ({_one_line(e)}); {fix}; {unchanged}") from e
        diff = verify(model, run, size, len(class_names), check_batches, tolerance, f"{fmt} export of {run_dir}",
                      fix=f"{fix}; {unchanged}")
        extra = sorted(p.name for p in tmp.iterdir() if p.name != out.name)  # ONNX external weights, if any
        info = _sidecar(fmt, out.name, cfg.model.name, class_names, model, size, fixed_batch, check_batches,
                        diff, tolerance, run_dir, checkpoint, files={n: _file_info(tmp / n) for n in [out.name, *extra]},
                        crop_ratio=source.crop_ratio)
        try:
            (tmp / sidecar_path(out).name).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            # extra files first, then the artefact, then the sidecar that describes it (with their sha256)
            for name in [*extra, out.name, sidecar_path(out).name]:
                os.replace(tmp / name, out.parent / name)
        except OSError as e:
            raise UserError(f"cannot write {out} ({e.strerror or e.__class__.__name__}); free disk space or "
                            f"fix the folder's permissions") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@torch.no_grad()
def verify(model: nn.Module, run: Callable, size: int, num_classes: int, batches, tolerance: float,
           what: str = "export", fix: str = "export with a fixed --batch N or another --format") -> float:
    """Max abs logit difference between ``run`` and ``model`` over fixed random [0, 1] batches.

    UserError (one line, ending in ``fix``) when ``run`` raises, gives the wrong shape, or differs by more
    than ``tolerance``.
    """
    worst = 0.0
    for b in batches:
        x = torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(1000 + b))
        expected = model(x)
        try:
            got = run(x)
            shape = tuple(got.shape)
        except Exception as e:  # e.g. a trace that baked in the batch size, an onnxruntime shape error
            raise UserError(f"the {what} fails on a batch of {b} ({_one_line(e)}); {fix}") from e
        if shape != (b, num_classes):
            raise UserError(f"the {what} gives logits of shape {shape} for a batch of {b}, "
                            f"expected {(b, num_classes)}; {fix}")
        worst = max(worst, (got.float() - expected).abs().max().item())
    if not worst <= tolerance:  # also catches NaN
        raise UserError(f"the {what} differs from the PyTorch model by up to {worst:.3g} in the logits "
                        f"(tolerance {tolerance:g}); {fix}")
    return worst


# ---------------------------------------------------------------- exporters: (model, example, path, dynamic)

def _batch_dim():
    return torch.export.Dim("batch", min=1)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool) -> None:
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: _batch_dim()},) if dynamic else None, verbose=False)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    # ONNX's protobuf tops out at 2 GB: bigger models keep their weights in <file>.data beside it
    program.save(str(path), external_data=weight_bytes > 1.5 * 2**30)


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool) -> None:
    with warnings.catch_warnings():
        # TorchScript is deprecated in torch 2.x and tracing warns about Python-side shape logic;
        # the check after export (batch 1 and 3) is what tells whether the trace generalises
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},) if dynamic else None)
    torch.export.save(program, str(path))


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript, "pt2": export_pt2}


# ---------------------------------------------------------------- loaders: path -> (x -> logits tensor)

def load_onnx(path: Path) -> Callable:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def load_torchscript(path: Path) -> Callable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def load_pt2(path: Path) -> Callable:
    return torch.export.load(str(path)).module()


LOADERS = {"onnx": load_onnx, "torchscript": load_torchscript, "pt2": load_pt2}


# ---------------------------------------------------------------- helpers

def _require_onnx() -> None:
    from fgvc.install import install_command

    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                        f"not installed; run {install_command('export')}, or use --format pt2 or torchscript")


def _resolve_out(run_dir: Path, fmt: str, out: str | Path | None) -> Path:
    """The file to write: a folder (existing, or written with a trailing separator) gets model.<ext>;
    a file must end in ``fmt``'s suffix, so neither a typo nor a suffix-less name writes a surprise file."""
    suffix = FORMATS[fmt]
    if out is None:
        return run_dir / "export" / f"model{suffix}"
    as_folder = str(out).endswith(tuple(s for s in (os.sep, os.altsep) if s))
    out = Path(out).expanduser()
    if as_folder or out.is_dir():
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}{os.sep} names a folder but {out} is a file; pass another --out")
        return out / f"model{suffix}"
    if out.suffix in FORMATS.values() and out.suffix != suffix:
        raise UserError(f"--out {out} has the suffix of another format than {fmt} ({suffix}); "
                        f"name it {out.with_suffix(suffix).name} or drop --format")
    if out.suffix != suffix:
        raise UserError(f"--out {out} is neither a folder nor a {suffix} file; pass {out}{os.sep} to write "
                        f"{Path(out.name) / ('model' + suffix)} in a folder, or {out.name}{suffix} for a file")
    return out


def _file_info(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "size_bytes": path.stat().st_size}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0][:200]}" if text else e.__class__.__name__


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _sidecar(fmt, file_name, model_name, class_names, model, size, fixed_batch, check_batches, diff, tolerance,
             run_dir, checkpoint, files, crop_ratio: float) -> dict:
    batch = fixed_batch if fixed_batch else "batch"
    normalize = getattr(model, "normalize", None)
    runtime = {"onnx": "onnxruntime", "torchscript": "torch.jit.load", "pt2": "torch.export.load"}[fmt]
    return {
        "format": fmt,
        "file": file_name,
        **files[file_name],
        "extra_files": {name: v for name, v in files.items() if name != file_name},
        "model": model_name,
        "classes": class_names,
        "num_classes": len(class_names),
        "image_size": size,
        "input": {
            "name": INPUT_NAME, "shape": [batch, 3, size, size], "dtype": "float32", "layout": "NCHW",
            "color": "RGB", "range": [0.0, 1.0],
            "batch": "dynamic (any size >= 1)" if fixed_batch is None else f"fixed at {fixed_batch}",
        },
        "output": {"name": OUTPUT_NAME, "shape": [batch, len(class_names)],
                   "meaning": "logits, in the order of 'classes'; softmax gives probabilities"},
        "normalization": "inside the model: feed [0, 1] RGB pixels, do not subtract a mean or divide by a std",
        "normalization_in_model": {
            "mean": [round(v, 6) for v in normalize.mean.flatten().tolist()] if normalize is not None else None,
            "std": [round(v, 6) for v in normalize.std.flatten().tolist()] if normalize is not None else None,
        },
        "preprocessing": eval_preprocessing(size, crop_ratio),  # the one description every fgvc path follows
        "verification": {
            "max_abs_diff": diff, "tolerance": tolerance, "batches": list(check_batches),
            "input": "torch.rand (uniform [0, 1]) with fixed seeds", "reference": "the PyTorch model on the CPU",
            "runtime": runtime,
        },
        "torch_version": torch.__version__,
        "onnxruntime_version": _version("onnxruntime") if fmt == "onnx" else None,
        "fgvc_version": _version("fgvc"),
        "run_dir": str(Path(run_dir).resolve()),
        "checkpoint": checkpoint,
    }
