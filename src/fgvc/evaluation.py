"""`fgvc eval RUN_DIR`: score a run's best checkpoint on a split, with calibration, TTA and open-set scores.

Writes into the run directory (atomically): ``eval_<split>.json`` (accuracy, top-5, loss,
per-class report, ``calibration``, ``protocol``, and when asked ``tta`` and ``openset``),
``confusion_<split>.png``, ``reliability.png`` and, with ``unknown``, ``openset_<split>.png``.
The plain numbers are always the single centre-crop ones; TTA numbers sit beside them.
See docs/evaluation.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from fgvc import api, calibration, runs, scored_checkpoint
from fgvc.data import resolve_num_workers
from fgvc.data.base import FineGrainedDataset
from fgvc.devices import analysis_precision, quiet_fabric, resolve_device
from fgvc.errors import UserError
from fgvc.metrics import class_report, confusion_matrix, plot_confusion
from fgvc.openset import HELDOUT, heldout_dataset, openset_report, plot_coverage, unknown_samples
from fgvc.protocol import eval_crop
from fgvc.train import evaluate
from fgvc.tta import TTA_MODES, TTAModel, check_mode, tta_transform


def eval_run(run_dir: str | Path, split: str = "test", tta: str | None = None, unknown: str | Path | None = None,
             progress: bool = True, device: str = "auto", precision: str = "run",
             data_root: str | Path | None = None) -> dict:
    """Evaluate ``run_dir`` on ``split`` as training scored it (same pipeline, batches and precision) and
    return the result written to ``eval_<split>.json``; accuracies are fractions in [0, 1].

    ``device``: auto | cpu | cuda[:N] (``fgvc.devices.resolve_device``). ``precision``: ``run`` (the
    precision the run trained in, from its metrics.json) or 32-true | bf16-mixed | 16-mixed; mixed precision
    runs only where the device supports it natively, else 32-true (``analysis_precision``). The precision
    used is recorded as ``precision`` (and in ``protocol``).

    - ``calibration``: ECE (equal-width and equal-mass bins), NLL, Brier on val and test, before and
      after temperature scaling fitted on val only (``fgvc.calibration``); reliability diagram of test.
    - ``tta`` ("flip", "five-crop", "ten-crop"): the TTA accuracy under result["tta"], beside the plain one.
    - ``unknown``: a folder of images of classes the model never saw, or ``"heldout"``: the test images of
      the classes of the run's dataset that its ``data.classes`` left out; open-set scores vs the split's
      images (``fgvc.openset``).

    - ``checkpoint``: which weights were scored (``fgvc.scored_checkpoint``: their epoch, sha256 and size);
      `fgvc report` leaves the evaluation out once the run's best checkpoint is another one. A run that
      has not finished (no metrics.json) is scored with its best checkpoint so far, said on stderr.

    Bad input (not a run directory, unknown TTA mode, a folder without images, a damaged metrics.json, no
    best checkpoint yet) raises UserError before anything is scored."""
    run = api.Run(run_dir, data_root)  # data_root: the run's dataset in the folder it moved to
    run_dir, name = run.dir, run.dir.resolve().name
    metrics = _read_metrics(run)  # everything eval reads is read before any scoring
    if tta is not None:
        check_mode(tta)
    unknown_set = _unknown_set(run, unknown, split) if unknown is not None else None
    sets = {s: run.dataset(s) for s in dict.fromkeys((split, "val", "test"))}
    checkpoint, scorer = _load_best(run, metrics, device, precision, progress)
    if not metrics:
        _say_unfinished(run, checkpoint)
    main_set = sets[split]
    main = scorer(main_set, desc=split)
    result = {k: main[k] for k in ("loss", "acc", "top5", "n")}
    result["precision"] = scorer.precision
    result["checkpoint"] = checkpoint
    conf = confusion_matrix(main["labels"], main["predicted"], len(run.class_names))
    report = class_report(conf, run.class_names)
    del report["confusions"]  # the top 20 are enough in the JSON; the plot shows them all
    result.update(report)
    protocol = {**(metrics.get("protocol") or {}), **eval_crop(main_set.transform), "tta": "none",
                "precision": scorer.precision, "device": str(scorer.fabric.device), "split": split}
    result["protocol"] = protocol

    # calibration: temperature fitted on val only, applied to test
    scored = {split: main}
    for other in ("val", "test"):
        if other not in scored:
            scored[other] = scorer(sets[other], desc=other)
    cal = calibration.calibrate(scored["val"]["logits"], scored["val"]["labels"], scored["test"]["logits"],
                                scored["test"]["labels"])
    result["calibration"] = cal
    files = {"json": run_dir / f"eval_{split}.json", "confusion": run_dir / f"confusion_{split}.png",
             "reliability": run_dir / "reliability.png"}
    if tta is not None:
        result["tta"] = _tta_result(run, scorer, split, tta, main, protocol)
    if unknown_set is not None:
        result["openset"], files["openset"] = _openset_result(scorer, unknown_set, unknown, main, split, run_dir)

    # figures first, the JSON last: its presence means the evaluation finished
    plot_confusion(conf, run.class_names, files["confusion"], title=f"{name}: {split} split")
    calibration.plot_reliability(scored["test"]["logits"], scored["test"]["labels"], cal["temperature"],
                                 files["reliability"], n_bins=cal["n_bins"],
                                 title=f"{name}: test, temperature fitted on val")
    runs.write_json_atomic(files["json"], result)
    result["files"] = {k: str(v) for k, v in files.items()}
    return result


def _openset_result(scorer: Scorer, unknown_set, unknown: str | Path, main: dict, split: str,
                    run_dir: Path) -> tuple[dict, Path]:
    """(the ``openset`` block, its coverage plot): the unknown images scored against ``main``, the scores
    of the known ``split``."""
    ood = scorer(unknown_set, desc="unknown")
    held = {"heldout_classes": unknown_set.class_names} if str(unknown) == HELDOUT else {}
    block = {"unknown_dir": str(unknown), "known_split": split, **held,
             **openset_report(main["logits"], main["labels"], ood["logits"])}
    plot = plot_coverage(main["logits"], main["labels"], run_dir / f"openset_{split}.png",
                         {k: v["auroc"] for k, v in block["scores"].items()},
                         title=f"{run_dir.resolve().name}: {split} vs {Path(unknown).name}")
    return block, plot


def _read_metrics(run: api.Run) -> dict:
    """metrics.json ({} while the run has not finished); a damaged one is a UserError that says how to
    rebuild it, raised before anything is scored."""
    path = run.dir / "metrics.json"
    try:
        metrics = runs.read_metrics(run.dir)
    except UserError:
        metrics = None
    if isinstance(metrics, dict):
        return metrics
    if (run.dir / "checkpoints" / "last_state.pt").is_file():
        fix = (f"rewrite it with fgvc train --resume {run.dir} (it scores the best checkpoint again and retrains "
               "no finished epoch), then evaluate again")
    else:
        fix = "the run has no checkpoints/last_state.pt to rebuild it from; delete it to evaluate the run as unfinished"
    raise UserError(f"{path} is damaged (not a JSON object of training results); {fix}")


def _load_best(run: api.Run, metrics: dict, device: str, precision: str, progress: bool):
    """(``checkpoint`` record, Scorer) of the run's best checkpoint: the record describes the very file the
    Scorer loaded (a run still training may replace best.safetensors meanwhile: then both are read again)."""
    path = run.dir / scored_checkpoint.BEST
    if not path.is_file():
        raise UserError(f"{run.dir} has no {scored_checkpoint.BEST} yet (no epoch has finished); evaluate it "
                        "after its first epoch")
    for _ in range(3):
        before = scored_checkpoint.file_identity(path)
        checkpoint = scored_checkpoint.record(run.dir, metrics)
        scorer = Scorer(run, device, precision, progress)
        if scored_checkpoint.file_identity(path) == before:
            return checkpoint, scorer
    raise UserError(f"{path} kept changing while it was read (is the run training?); evaluate it again")


def _say_unfinished(run: api.Run, checkpoint: dict) -> None:
    """An unfinished run is scored, with a plain line on stderr saying which checkpoint."""
    epochs = run.config.train.epochs
    which = f"epoch {checkpoint['epoch']} of {epochs}" if checkpoint["epoch"] else f"an unknown epoch of {epochs}"
    print(f"note: {run.dir} has not finished training (no metrics.json): scoring its best checkpoint so far, from "
          f"{which}; fgvc report shows this evaluation only while that checkpoint stays the best, so evaluate "
          "again when training has finished", file=sys.stderr)


class Scorer:
    """Scores datasets with a run's best checkpoint as training did: the run's batch size, and Fabric
    with the analysis precision (mixed precision also casts the inputs, not only the forward)."""

    def __init__(self, run: api.Run, device: str, precision: str, progress: bool):
        device = resolve_device(device)
        self.precision = analysis_precision(precision, device, run.dir)
        self.model = run.model()
        self.fabric = quiet_fabric(accelerator=device.type, devices=[device.index] if device.index is not None else 1,
                             precision=self.precision)
        self.net = self.fabric.setup_module(self.model)
        self.batch_size, self.progress = run.config.train.batch_size * 2, progress
        self.workers = resolve_num_workers(run.config.data.num_workers, device.type == "cuda")

    def __call__(self, dataset, net=None, desc: str = "eval") -> dict:
        """``fgvc.train.evaluate`` over ``dataset`` with predictions and logits (``net``: another wrapper)."""
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, num_workers=self.workers)
        return evaluate(net or self.net, loader, autocast=self.fabric.autocast, device=self.fabric.device,
                        progress=self.progress, desc=desc, predictions=True, logits=True)


def _unknown_set(run: api.Run, unknown: str | Path, split: str = "test"):
    """Images of classes the model never saw: a folder, or ``heldout`` (the classes data.classes left out,
    from the same ``split`` as the known images)."""
    if str(unknown) == HELDOUT:  # a run on every class has none held out: one sentence
        return heldout_dataset(run.config, run.eval_transform, split)
    return FineGrainedDataset(unknown_samples(unknown), ["unknown"], run.eval_transform, name="unknown",
                              split="unknown", root=Path(unknown))


def _tta_result(run: api.Run, scorer: Scorer, split: str, tta: str, main: dict, protocol: dict) -> dict:
    """Test-time augmentation accuracy beside (never instead of) the plain one."""
    views = scorer(run.dataset(split, tta_transform(run.image_size, tta, run.crop_ratio)),
                   scorer.fabric.setup_module(TTAModel(scorer.model, tta)), desc=f"{split} {tta}")
    return {"mode": tta, "views": TTA_MODES[tta], "aggregation": "mean of softmax probabilities",
            **{k: views[k] for k in ("acc", "top5", "loss", "n")}, "gain": views["acc"] - main["acc"],
            "protocol": {**protocol, "tta": tta}}


def summary(result: dict, split: str) -> str:
    """The lines `fgvc eval` prints."""
    lines = [f"{split}: acc {result['acc']:.4f}  top-5 {result['top5']:.4f}  mean per-class acc "
             f"{result['mean_class_acc']:.4f}  loss {result['loss']:.4f}  ({result['n']} images)"]
    if "tta" in result:
        t = result["tta"]
        lines.append(f"{split} with TTA {t['mode']} ({t['views']} views): acc {t['acc']:.4f}  top-5 {t['top5']:.4f}  "
                     f"(gain {t['gain']:+.4f}; the plain number above stays the headline)")
    cal = result["calibration"]
    b, a = cal["test"]["before"], cal["test"]["after"]
    lines.append(f"calibration (test): ECE {b['ece']:.4f} -> {a['ece']:.4f}  equal-mass ECE {b['ece_mass']:.4f} -> "
                 f"{a['ece_mass']:.4f}  NLL {b['nll']:.4f} -> {a['nll']:.4f}  Brier {b['brier']:.4f} -> "
                 f"{a['brier']:.4f}  (temperature {cal['temperature']:.3f}, fitted on val)")
    if cal.get("warning"):
        lines.append(f"warning: {cal['warning']}")
    if "openset" in result:
        o = result["openset"]
        scores = "  ".join(f"{k} AUROC {v['auroc']:.4f} FPR@95%TPR {v['fpr_at_95_tpr']:.4f}"
                           for k, v in o["scores"].items())
        lines.append(f"unknown images ({o['unknown_images']} vs {o['known_images']} known): {scores}")
    if result["top_confusions"]:
        lines.append("most confused (true -> predicted: images, share of the true class):")
        lines += [f"  {c['true']} -> {c['predicted']}: {c['count']}, {c['rate']:.2f}" for c in result["top_confusions"][:5]]
    return "\n".join(lines)


__all__ = ["eval_run", "summary"]
