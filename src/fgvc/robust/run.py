"""`fgvc attack`: an eps sweep on a trained run, written into its run directory.

Writes ``attack/<name>.json`` (accuracy per eps), ``attack/<name>.png`` (accuracy
against eps, seed Fig. 9/11) and ``attack/<name>_gallery.png`` (successful adversarial
examples per eps of the latest sweep, Fig. 10), where ``<name>`` is the attack, plus
``_<split>`` off the test split and ``_n<limit>`` for a limited sweep. A later sweep of the
same name adds its eps points to the curve (a repeated eps is replaced), so running
``--eps 0.5`` after the seed list extends that curve instead of replacing it. With
``compare`` (another run, e.g. adversarially trained), both curves go on one plot and one
table with the difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from fgvc import api, runs
from fgvc import config as config_mod
from fgvc.data import resolve_num_workers
from fgvc.devices import analysis_precision, resolve_device
from fgvc.errors import UserError
from fgvc.robust.attacks import ATTACKS, resolve_attack
from fgvc.robust.plots import attack_images, plot_accuracy_vs_eps, save_gallery
from fgvc.robust.sweep import SEED_EPS, evaluate_attack, format_eps, markdown_table
from fgvc.scored_checkpoint import unfinished_note


def _prepare(run_dir: Path, split: str, limit: int | None, device: torch.device, precision: str,
             data_root: str | Path | None = None):
    """(run, dataset, precision) of a run to attack, every file it needs checked and no model loaded yet, so
    that a bad run directory (``--compare`` too) is one sentence before any sweep."""
    run = api.Run(run_dir, data_root)
    if not (run.dir / "checkpoints" / "best.safetensors").is_file():
        raise UserError(f"{run.dir} has no checkpoints/best.safetensors (no epoch finished); attack a run that "
                        "has trained at least one epoch")
    precision = analysis_precision(precision, device, run.dir)
    dataset = run.dataset(split)
    note = unfinished_note(run.dir, run.config.train.epochs, "attacking")
    if note:
        print(note, file=sys.stderr)
    if limit is not None and limit < len(dataset):
        # evenly spaced, so a limited attack still covers every class (splits are sorted by class)
        dataset = torch.utils.data.Subset(dataset, [i * len(dataset) // limit for i in range(limit)])
    return run, dataset, precision


def _sweep_run(prepared, attack: str, eps_list, alpha, steps, device: torch.device,
               progress: bool) -> tuple[dict, list[str]]:
    run, dataset, precision = prepared
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=resolve_num_workers(
        run.config.data.num_workers, device.type == "cuda"))
    result = evaluate_attack(run.model(), loader, attack, eps_list, alpha=alpha, steps=steps, device=device,
                             progress=progress, precision=precision)
    return result, run.class_names


def attack_run(run_dir: str | Path, attack: str = "fgsm", eps_list=None, split: str = "test",
               limit: int | None = None, alpha: float | None = None, steps: int | None = None,
               compare: str | Path | None = None, device: str = "auto", progress: bool = True,
               precision: str = "run", data_root: str | Path | None = None) -> dict:
    """Accuracy per eps for the run (and ``compare``); returns {'table', 'files', 'accuracy', 'precision'}.

    ``device``: auto | cpu | cuda[:N]; ``precision``: ``run`` (each run's own, where the device supports
    it; ``fgvc.devices.analysis_precision``) or 32-true | bf16-mixed | 16-mixed, recorded in the JSON.
    """
    run_dir = runs.check_run_dir(run_dir)
    spec = resolve_attack(attack, 0.0, alpha, steps)  # a bad name or setting: one sentence before any model loads
    for flag, value, takes in (("--alpha", alpha, "takes_alpha"), ("--steps", steps, "takes_steps")):
        if value is not None and not getattr(spec, takes):  # silently ignored otherwise
            users = ", ".join(n for n, a in ATTACKS.items() if getattr(a, takes))
            raise UserError(f"{flag} does not apply to --attack {attack}; drop it, or use one of {users}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: attack at least 1 image, or leave --limit out for the whole split")
    eps_list = SEED_EPS if eps_list is None else eps_list
    device = resolve_device(device)
    # both runs checked (folders, checkpoints, data, precision) before any model loads
    prepared = _prepare(run_dir, split, limit, device, precision, data_root)
    if compare:  # the same dataset: data_root (it moved) holds it for both runs
        compare = runs.check_run_dir(compare)
        compared = _prepare(compare, split, limit, device, precision, data_root)
    result, class_names = _sweep_run(prepared, attack, eps_list, alpha, steps, device, progress)
    out = run_dir / "attack"
    out.mkdir(exist_ok=True)
    curves = {run_dir.resolve().name: result["accuracy"]}  # resolved: `fgvc attack .` has a name too
    precisions = {run_dir.resolve().name: result["precision"]}  # each run attacked in its own (--precision run)
    if compare:
        other, _ = _sweep_run(compared, attack, eps_list, alpha, steps, device, progress)
        label = compare.resolve().name
        named = difference_labels(prepared[0].config, compared[0].config)
        if named:  # the curves say what differs (model, method, adversarial training), not two timestamps
            curves, precisions = {named[0]: result["accuracy"]}, {named[0]: result["precision"]}
            label = named[1]
        elif label in curves:  # two runs in folders of the same name: label them by their full paths
            curves = {str(run_dir.resolve()): result["accuracy"]}
            precisions = {str(run_dir.resolve()): result["precision"]}
            label = str(compare.resolve())
        curves[label] = other["accuracy"]
        precisions[label] = other["precision"]
    name = attack + ("" if split == "test" else f"_{split}") + ("" if limit is None else f"_n{limit}")
    # A later sweep extends an earlier one only if everything but eps is the same: the images,
    # the step rule and the very checkpoints (a retrained run is another model).
    key = {"attack": attack, "split": split, "total": result["total"], "alpha": alpha, "steps": steps,
           "precision": result["precision"], "precisions": precisions,
           "checkpoints": {label: checkpoint_fingerprint(d) for label, d in zip(curves, [run_dir, compare] if compare else [run_dir])}}
    settings = dict(result["settings"])
    earlier = _earlier_sweep(out / f"{name}.json", key)
    if earlier:
        old_settings, old_curves = earlier
        settings = {**old_settings, **settings}
        curves = {run: {**old_curves.get(run, {}), **curve} for run, curve in curves.items()}
    curves = {run: dict(sorted(curve.items())) for run, curve in curves.items()}
    eps_values = sorted(settings)
    record = {**key, "eps": {format_eps(e): e for e in eps_values},
              "settings": {format_eps(e): settings[e] for e in eps_values},
              "accuracy": {run: {format_eps(e): a for e, a in curve.items()} for run, curve in curves.items()}}
    runs.write_json_atomic(out / f"{name}.json", record)
    table = markdown_table(curves)
    runs.write_text_atomic(out / f"{name}.md", f"# {attack} on the {split} split ({result['total']} images)\n\n" + table)
    files = [out / f"{name}.json", out / f"{name}.md",
             plot_accuracy_vs_eps(curves, out / f"{name}.png", title=f"Accuracy under {attack.upper()}")]
    if any(result["examples"].values()):
        model = api.Run(run_dir).model()  # the gallery attacks its images at every eps: one image per row
        files.append(save_gallery(result["examples"], class_names, out / f"{name}_gallery.png",
                                  attack_fn=attack_images(model, attack, result["settings"], device,
                                                          precision=result["precision"]),
                                  title=f"{run_dir.resolve().name}: {attack.upper()} on the {split} split"))
    return {"table": table, "files": [str(f) for f in files], "accuracy": result["accuracy"],
            "precision": result["precision"]}


# keys that say where or how fast a run ran, not what it is: never a curve's name
_NOT_NAMING = ("out", "data.root", "data.num_workers", "data.cache", "data.cache_budget_gb", "data.cache_dir",
               "train.loggers", "train.devices", "train.accelerator", "train.precision", "train.compile",
               "train.channels_last", "model.weights_sha256", "clip.cache_dir", "clip.offline")
_FIRST = ("model.name", "method.name", "adv.attack", "adv.eps", "model.pretrained", "model.weights", "model.trainable")


def difference_labels(a: config_mod.Config, b: config_mod.Config, most: int = 3) -> tuple[str, str] | None:
    """Names for two runs' curves from the settings that differ, model, method and adversarial training
    first (``resnet18, adv.attack=none`` vs ``resnet18, adv.attack=fgsm``), at most ``most`` of them;
    None when only where-it-ran settings differ."""
    keys = [k for k in config_mod.all_keys() if k not in _NOT_NAMING
            and config_mod.get(a, k) != config_mod.get(b, k)]
    if not keys:
        return None
    keys.sort(key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), k.split(".")[0] != "method", k))

    def name(cfg) -> str:
        parts = [str(config_mod.get(cfg, k)) if k in ("model.name", "method.name") else f"{k}={config_mod.get(cfg, k)}"
                 for k in keys[:most]]
        return ", ".join(parts) + (", ..." if len(keys) > most else "")

    labels = name(a), name(b)
    return labels if labels[0] != labels[1] else None


def checkpoint_fingerprint(run_dir: Path) -> str:
    """Size and modification time of the attacked checkpoint: changes when the run is retrained."""
    stat = (Path(run_dir) / "checkpoints" / "best.safetensors").stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def _earlier_sweep(path: Path, key: dict) -> tuple[dict, dict] | None:
    """(settings, curves), keyed by exact eps, of an earlier sweep with the same key, else None."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if {k: record.get(k) for k in key} != key:
            return None
        eps = {label: float(value) for label, value in record["eps"].items()}
        settings = {eps[label]: s for label, s in record["settings"].items()}
        curves = {run: {eps[label]: float(a) for label, a in curve.items()} for run, curve in record["accuracy"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable, foreign or from an older fgvc: this sweep's file replaces it
    return settings, curves
