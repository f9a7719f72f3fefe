"""``fgvc explain``: maps, overlays and localisation scores for a trained run directory.

Writes into ``RUN_DIR/explain/`` (or ``out_dir``): one panel PNG per image
(image | CAM | Grad-CAM ...), ``grid.png`` with a row per image, optionally
``maps.safetensors`` (the raw maps), and where the split has boxes ``localization.json``
with the localisation table over the whole split.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import save
from torch.utils.data import DataLoader, Subset

from fgvc import api, runs
from fgvc.data.base import readable_name
from fgvc.data.transforms import load_eval_image
from fgvc.devices import analysis_precision, autocast, resolve_device
from fgvc.errors import UserError
from fgvc.explain.attention import check_attention
from fgvc.explain.cam import METHODS, check_cam, explain, resolve_layer, supports_cam, to_grid
from fgvc.explain.localization import evaluate_localization, format_table
from fgvc.explain.overlay import save_grid, save_panel
from fgvc.scored_checkpoint import unfinished_note

DEFAULT_METHODS = ("cam", "gradcam")


def parse_methods(methods: str | Sequence[str] | None) -> tuple[list[str], bool]:
    """``(names, explicit)``; None means the defaults, 'cam,gradcam' is split at commas."""
    if methods is None:
        return list(DEFAULT_METHODS), False
    if isinstance(methods, str):
        methods = methods.split(",")
    names = list(dict.fromkeys(m.strip().lower() for m in methods if m.strip()))  # ordered, no repeats
    if not names:
        raise UserError(f"no explanation method given; choose from {', '.join(METHODS)}")
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise UserError(f"unknown explanation method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    return names, True


def explain_run(run_dir: str | Path, images: Sequence[str | Path] = (), methods: str | Sequence[str] | None = None,
                split: str = "test", limit: int = 8, out_dir: str | Path | None = None, save_maps: bool = False,
                device: str = "auto", data_root: str | Path | None = None, localization: bool = True,
                localization_limit: int | None = None, batch_size: int = 32,
                log: Callable[[str], None] | None = print, precision: str = "run") -> dict:
    """Explain a run's predictions on image files, or on ``limit`` images of its ``split``.

    ``methods``: names from 'cam', 'gradcam', 'gradcam++', 'attention' (list or comma string); None
    means cam + gradcam, with CAM left out (and a note) for models it does not fit, such
    as ViTs; asking for 'cam' explicitly on such a model is a UserError. Maps explain the
    predicted class. Split images are spread evenly over the split, so several classes
    show. When the split has boxes (and no image files are given), the localisation
    table (true class explained, ``localization_limit`` images, all by default) is
    computed, logged and written to ``localization.json``. ``data_root`` overrides the
    run's ``data.root`` (a run moved to another machine). ``device``: auto | cpu | cuda[:N];
    ``precision``: ``run`` (the precision the run trained in, where the device supports it; see
    ``fgvc.devices.analysis_precision``) or 32-true | bf16-mixed | 16-mixed: the forwards run under
    that autocast. Returns a summary dict (with the ``device`` and ``precision`` used).
    """
    say = log or (lambda _msg: None)
    run_dir = runs.check_run_dir(run_dir)
    if out_dir is not None:  # a file there: refused before the model loads
        runs.check_out_dir(out_dir, "--out")
    names, explicit = parse_methods(methods)
    if limit < 1 and not images:
        raise UserError(f"--limit must be 1 or more, got {limit}")
    device = resolve_device(device)
    precision = analysis_precision(precision, device, run_dir)
    run = api.Run(run_dir, data_root)
    note = unfinished_note(run.dir, run.config.train.epochs, "explaining")
    if note:
        print(note, file=sys.stderr)
    model, class_names, cfg = run.model().to(device).eval(), run.class_names, run.config
    notes = []
    if "attention" in names:
        check_attention(model)  # a model without an attention branch: refused before anything is drawn
    if "cam" in names and not supports_cam(model):
        if explicit:
            check_cam(model)  # raises the UserError that says why and points to Grad-CAM
        names.remove("cam")
        method = getattr(model, "method", "plain")
        what = f"the head of method.name={method}" if method != "plain" else cfg.model.name
        notes.append(f"CAM skipped: {what} does not end in global average pooling + a linear layer; "
                     "Grad-CAM shown instead")
    x, labels, stems, boxes, dataset = _inputs(run, images, split, limit)  # a missing image: nothing made yet
    out = Path(out_dir).expanduser() if out_dir is not None else run_dir / "explain"
    out.mkdir(parents=True, exist_ok=True)

    small = small_feature_map(model, x[:1].to(device), cfg.data.image_size)
    if small:
        say(f"warning: {small}")
    stacked, preds, probs = _maps(model, x, names, explicit, batch_size, device, precision, notes, cfg.model.name)

    true_names = [class_names[y] if y is not None else None for y in labels]
    pred_names = [class_names[p] for p in preds]
    title = f"{run_dir.resolve().name}: where the model looks, maps of the predicted class"
    panels, grid = _draw(out, x, stacked, names, true_names, pred_names, stems, boxes, title,
                         f"{title} ({split} split)" if dataset is not None else title)
    maps_path = _save_maps(out / "maps.safetensors", stacked, x, preds, labels, stems) if save_maps else None
    for note in notes:
        say(f"note: {note}")
    say(f"wrote {len(panels)} panels and {grid.name} to {out}")

    results, table = None, None
    if localization and dataset is not None and dataset.has_boxes:
        results, table = _localization(model, dataset, names, split, out, cfg.data.image_size, localization_limit,
                                       batch_size, device, precision, progress=log is not None)
        say(f"localisation on {split} ({results[names[0]]['n']} images, true class explained):")
        say(table)
    elif localization and dataset is not None:  # said, so that a missing table is never a mystery
        say(f"note: no localisation table: the {split} split of {cfg.data.name} in {cfg.data.root} has no bounding "
            "boxes (CUB's bounding_boxes.txt, Stanford Dogs' Annotation/ files); the maps are drawn without them")
    return {
        "out_dir": str(out), "methods": names, "notes": notes, "warnings": [small] if small else [], "panels": panels, "grid": str(grid),
        "maps": str(maps_path) if maps_path else None,
        "predictions": [{"image": s, "true": t, "pred": p, "prob": pr}
                        for s, t, p, pr in zip(stems, true_names, pred_names, probs)],
        "localization": results, "table": table, "device": str(device), "precision": precision,
    }


def _draw(out: Path, x, stacked: dict, names: list[str], true_names: list, pred_names: list[str], stems: list[str],
          boxes: list, title: str, grid_title: str) -> tuple[list[str], Path]:
    """(panel paths, grid path): one panel PNG per image (the image and its maps, boxes drawn where known)
    and ``grid.png`` with a row per image, class names shown readable."""
    shown_true = [readable_name(n) if n is not None else None for n in true_names]
    shown_pred = [readable_name(n) for n in pred_names]
    panels = []
    for i in range(len(x)):
        path = out / f"{i:03d}_{_safe(stems[i])}.png"
        save_panel(x[i], {m: stacked[m][i] for m in names}, shown_true[i], shown_pred[i], path, box=boxes[i],
                   title=title)
        panels.append(str(path))
    grid = save_grid(list(x), stacked, shown_true, shown_pred, out / "grid.png", boxes=boxes, title=grid_title)
    return panels, grid


def _localization(model, dataset, names: list[str], split: str, out: Path, image_size: int, limit: int | None,
                  batch_size: int, device, precision: str, progress: bool) -> tuple[dict, str]:
    """(scores per method, their table) of the maps of the true class against the boxes of ``dataset``
    (the first ``limit`` images, all with None), written to ``out/localization.json``."""
    dataset.return_boxes = True
    subset = dataset if limit is None else Subset(dataset, range(min(limit, len(dataset))))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0)
    with autocast(precision, device):
        results = evaluate_localization(model, loader, names, device=device, progress=progress)
    runs.write_json_atomic(out / "localization.json", {
        "split": split, "target": "label", "image_size": image_size, "precision": precision,
        "methods": {m: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                    for m, r in results.items()},
    })
    return results, format_table(results)


def _inputs(run: api.Run, images, split: str, limit: int):
    """(x (N, 3, S, S) in [0, 1], labels (None for files), stems, boxes, dataset or None): the image files
    decoded as predict and evaluation do, or ``limit`` images spread evenly over the run's ``split``."""
    cfg = run.config
    if images:
        paths = [Path(p).expanduser() for p in images]
        x = torch.cat([load_eval_image(p, cfg.data.image_size, cfg.data.crop_ratio) for p in paths])
        return x, [None] * len(paths), [p.stem for p in paths], [None] * len(paths), None
    root = cfg.data.root  # the run's, or the folder its dataset moved to (Run's data_root)
    dataset = run.dataset(split, run.eval_transform)
    if len(dataset) == 0:
        raise UserError(f"split {split!r} of {cfg.data.name} under {root} has no images")
    n = min(limit, len(dataset))
    picks = sorted({int(i * len(dataset) / n) for i in range(n)})
    dataset.return_boxes = bool(getattr(dataset, "has_boxes", False))  # boxes drawn on the panels
    items = [dataset[i] for i in picks]
    dataset.return_boxes = False
    return (torch.stack([item[0] for item in items]), [int(item[1]) for item in items],
            [Path(dataset.samples[i].path).stem for i in picks],
            [item[2] if len(item) > 2 else None for item in items], dataset)


def _maps(model, x, names: list[str], explicit: bool, batch_size: int, device, precision: str, notes: list[str],
          model_name: str):
    """({method: (N, H, W) maps of the predicted class}, predicted indices, their probabilities). CAM that
    fails its GAP + linear check on the real logits is dropped with a note unless asked for by name."""
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in names}
    preds, probs = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        with torch.no_grad(), autocast(precision, device):
            p = model(xb).float().softmax(dim=1)
        preds += p.argmax(dim=1).tolist()
        probs += p.max(dim=1).values.tolist()
        for m in list(names):
            try:
                with autocast(precision, device):
                    maps[m].append(explain(model, xb, m).float().cpu())
            except UserError:
                if explicit or m != "cam":
                    raise
                # CAM has the structure but fails its GAP + linear check (e.g. a norm in the head)
                notes.append(f"CAM skipped: {model_name}'s logits are not GAP + linear over its feature map")
                names.remove(m)
                del maps[m]
    return {m: torch.cat(v) for m, v in maps.items()}, preds, probs


def _save_maps(path: Path, stacked: dict, x, preds: list[int], labels: list, stems: list[str]) -> Path:
    """maps.safetensors: every map, the images, predictions (and labels when all are known)."""
    tensors = {f"maps.{m}": v.contiguous() for m, v in stacked.items()}
    tensors["images"] = x.contiguous()
    tensors["pred"] = torch.tensor(preds, dtype=torch.long)
    if all(y is not None for y in labels):
        tensors["label"] = torch.tensor(labels, dtype=torch.long)
    runs.write_bytes_atomic(path, save(tensors, metadata={"methods": ",".join(stacked), "files": "\n".join(stems)}))
    return path


USEFUL_SIDE = 7  # a last feature map of about 7x7 or more (ResNets at 224 px) gives maps worth reading


def feature_map_side(model, x: torch.Tensor) -> tuple[int, int] | None:
    """(h, w) of the last feature map (the layer CAM and Grad-CAM use) for input ``x``; None if unknown."""
    try:
        module, name = resolve_layer(model, None)
    except UserError:
        return None
    outputs = []
    handle = module.register_forward_hook(lambda m, i, o: outputs.append(o))
    try:
        with torch.no_grad():
            model(x)
        t = outputs[0][0] if isinstance(outputs[0], (tuple, list)) else outputs[0]
        grid = to_grid(model, t, x.shape[-2:], name, module)
    except (UserError, IndexError, RuntimeError, TypeError):
        return None
    finally:
        handle.remove()
    return int(grid.shape[-2]), int(grid.shape[-1])


def small_feature_map(model, x: torch.Tensor, image_size: int) -> str | None:
    """A sentence when the last feature map is smaller than about 7x7 (maps then are smooth blends of a
    few cells, not localisations), naming the resolution that gives 7x7; else None."""
    side = feature_map_side(model, x)
    if side is None or min(side) >= USEFUL_SIDE:
        return None
    needed = math.ceil(image_size * USEFUL_SIDE / min(side) / 32) * 32
    what = ("one cell (a flat map: energy in box is undefined, n/a)" if side[0] * side[1] == 1 else
            f"a blend of {side[0] * side[1]} cells (a smooth gradient, localisation scores near chance)")
    return (f"the last feature map is {side[0]}x{side[1]} at data.image_size={image_size}, so each map is {what}; "
            f"train at data.image_size={needed} or more for a {USEFUL_SIDE}x{USEFUL_SIDE} map worth reading")


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:120] or "image"  # the index prefix keeps equal stems apart
