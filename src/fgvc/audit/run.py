"""`fgvc data audit`: run the duplicate and/or label-noise audits of a dataset and write their reports.

Output folder (default ``audit/<name>``):
- duplicates: ``pairs.csv``, ``pairs.md``, ``pairs.png`` (gallery of the closest pairs) and, with a run,
  the test accuracy with and without the duplicated test images; pairs come from perceptual hashes and,
  when ``--model`` gives a pretrained backbone, from its embeddings too;
- labels: ``suspects.csv``, ``suspects.png`` (gallery of the top suspects, given and suggested class);
- ``summary.json`` (written last: its presence means the audit finished).
"""

from __future__ import annotations

import time
from pathlib import Path

from fgvc import runs
from fgvc.audit import duplicates, embeddings, gallery, labelnoise
from fgvc.errors import UserError

AUDITS = ("duplicates", "labels")
DETECTORS = ("hash", "embedding")
PAIR_FIELDS = ["kind", "image", "split", "label", "match", "match_source", "match_label", "distance", "similarity",
               "detector"]
SUSPECT_FIELDS = ["path", "given", "suggested", "score", "given_prob", "suggested_prob"]


def parse_what(what: str | None, run, model_name) -> tuple[str, ...]:
    """Audits to run: ``what`` as a comma list of duplicates, labels; by default duplicates, plus labels
    when a feature source (``run`` or ``model_name``) is given."""
    if what is None:
        return ("duplicates", "labels") if (run or model_name) else ("duplicates",)
    names = tuple(dict.fromkeys(w.strip() for w in what.split(",") if w.strip()))
    bad = [w for w in names if w not in AUDITS]
    if bad or not names:
        raise UserError(f"unknown audit {bad[0] if bad else what!r} in --what; choose duplicates, labels or "
                        "duplicates,labels")
    return names


def parse_detectors(spec: str | None, model_name) -> tuple[str, ...]:
    """Near-duplicate detectors: ``spec`` as a comma list of hash, embedding; by default hash, plus
    embedding when a pretrained backbone (``model_name``) is given. UserError on an unknown name, or
    embedding without a pretrained backbone (a run's backbone, trained on these labels, draws images
    of one class together: its similarity says "same class" as much as "same photograph")."""
    if spec is None:
        return DETECTORS if model_name else ("hash",)
    names = tuple(dict.fromkeys(d.strip() for d in spec.split(",") if d.strip()))
    bad = [d for d in names if d not in DETECTORS]
    if bad or not names:
        raise UserError(f"unknown detector {bad[0] if bad else spec!r} in --detectors; choose hash, embedding or "
                        "hash,embedding")
    if "embedding" in names and not model_name:
        raise UserError("the embedding detector needs a pretrained backbone: pass --model NAME (with --weights "
                        "FILE for local pretrained weights, e.g. tf_mobilenetv2_100 and its .tflite file)")
    return names


def _check_run(run) -> None:
    if run is None:
        return
    run_dir = runs.check_run_dir(run)
    if not (run_dir / "checkpoints" / "best.safetensors").is_file():
        raise UserError(f"run {run_dir} has no checkpoints/best.safetensors; pass a finished run of `fgvc train`")


def _free_folder(folder: Path) -> Path:
    """``folder``, or ``folder-2``, ``folder-3``, ... : the first that holds no finished audit."""
    k, candidate = 1, folder
    while (candidate / "summary.json").is_file():
        k += 1
        candidate = folder.with_name(f"{folder.name}-{k}")
    return candidate


def run_audit(name: str, root, out=None, what: str | None = None, against=(), threshold: int | None = None,
              hashes: str = ",".join(duplicates.DEFAULT_HASHES), run=None, model_name: str | None = None,
              weights: str | None = None, image_size: int = 224, folds: int = labelnoise.DEFAULT_FOLDS,
              top: int = 24, seed: int = 0, val_fraction: float = 0.1, progress: bool = True,
              detectors: str | None = None, similarity: float | None = None, overwrite: bool = False) -> dict:
    """Run the audits ``what`` (see parse_what) of dataset ``name`` at ``root`` and write their reports
    into ``out`` (default ``audit/<name>``, or ``audit/<name>-2``, ... when that holds a finished audit); returns
    the summary written to ``summary.json``. ``out`` holding a finished audit is refused unless ``overwrite``.
    ``detectors`` (see parse_detectors) and ``similarity`` (cosine, default
    ``embeddings.DEFAULT_SIMILARITY``) set the duplicates audit's embedding detector.
    Bad input (unknown dataset, audit or detector, missing folder, run without checkpoint, folds < 2, a
    class with fewer images than folds) raises UserError before anything is computed or written."""
    t0 = time.perf_counter()
    out = runs.check_out_dir(out if out else _free_folder(Path("audit") / name), "--out")  # a file: refused now
    if (out / "summary.json").is_file() and not overwrite:
        raise UserError(f"--out {out} holds a finished audit (summary.json); give another --out, or add --overwrite "
                        "to replace it")
    audits = parse_what(what, run, model_name)
    threshold = duplicates.DEFAULT_THRESHOLD if threshold is None else threshold
    hash_names = duplicates.parse_hashes(hashes)
    duplicates.check_threshold(threshold, hash_names)
    detector_names = parse_detectors(detectors, model_name) if "duplicates" in audits else ()
    similarity = embeddings.check_similarity(embeddings.DEFAULT_SIMILARITY if similarity is None else similarity)
    if folds < 2:
        raise UserError(f"--folds {folds} is too few; out-of-fold predictions need at least 2 folds")
    _check_run(run)
    for folder in against:
        duplicates.folder_images(folder)
    train, test, class_names = duplicates.dataset_splits(name, root, val_fraction, seed)
    if "labels" in audits:
        labelnoise.check_folds([s.label for s in train], folds, class_names)
        if run is None and not model_name:
            raise UserError("the label-noise audit needs features: pass --run RUN_DIR or --model NAME "
                            "(with --weights FILE for local pretrained weights)")
    summary = {"dataset": name, "root": str(root), "audits": list(audits), "train_images": len(train),
               "test_images": len(test), "classes": len(class_names)}
    if "duplicates" in audits:
        summary["duplicates"] = _duplicates(name, root, out, against, threshold, hash_names, run, top, seed,
                                            val_fraction, progress, detector_names, similarity,
                                            (model_name, weights, image_size))
    if "labels" in audits:
        summary["labels"] = _labels(name, root, out, run, model_name, weights, image_size, folds, top, seed,
                                    val_fraction, progress)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    runs.write_json_atomic(out / "summary.json", summary)
    summary["out"] = str(out)
    return summary


def _duplicates(name, root, out: Path, against, threshold, hash_names, run, top, seed, val_fraction,
                progress, detector_names, similarity, pretrained) -> dict:
    features, source = None, None
    if "embedding" in detector_names:
        model, size, source = embeddings.backbone(None, *pretrained)
        features = (model, size)
    found = duplicates.find_duplicates(name, root, against, threshold if "hash" in detector_names else None,
                                       hash_names, val_fraction, seed, progress, features, similarity)
    pairs = found["pairs"]
    runs.write_csv_atomic(out / "pairs.csv", pairs, PAIR_FIELDS)
    shown = [{**p, "image_label": f"{p['split']}: {p['label']}",
              "match_label": f"{p['match_source']}: {p['match_label']}" if p["kind"] != "against"
              else Path(p["match_source"]).name,
              "distance": f"{p['distance']} bits" + ("" if p["similarity"] is None else f", cosine {p['similarity']:.3f}")}
             for p in pairs]
    criterion = _criterion(detector_names, threshold, found["bits"], similarity)
    png = gallery.plot_pairs(shown, out / "pairs.png", f"{name}: {len(pairs)} near-duplicate pair(s), {criterion}",
                             limit=top)
    # leakage only: a test image with a copy in train or in an --against folder (a test-test pair is not)
    test_dups = sorted({p["image"] for p in pairs if p["split"] == "test" and p["kind"] != "test-test"})
    result = {"detectors": list(detector_names), "hashes": found["hashes"], "bits": found["bits"],
              "threshold": threshold if "hash" in detector_names else None,
              "similarity": similarity if features is not None else None, "embedding": source,
              "counts": found["counts"], "pairs": len(pairs),
              "train_test_pairs": sum(p["kind"] == "train-test" for p in pairs),
              "against_pairs": sum(p["kind"] == "against" for p in pairs),
              "within_split_pairs": sum(p["kind"] in ("train-train", "test-test") for p in pairs),
              # the same photograph under two classes: a leak (or a repeat) and a label error at once
              "cross_class_pairs": sum(p["kind"] != "against" and p["label"] != p["match_label"] for p in pairs),
              "test_images_with_duplicate": len(test_dups),
              "criterion": criterion}
    if run is not None:
        result["accuracy"] = duplicates.accuracy_without(run, name, root, set(test_dups), val_fraction, seed,
                                                         progress)
    runs.write_text_atomic(out / "pairs.md", _pairs_markdown(name, pairs, result, png))
    return result


def _criterion(detector_names, threshold, bits, similarity) -> str:
    """How a pair was chosen, in words: "at most 20 of 192 bits apart or cosine similarity >= 0.9"."""
    parts = []
    if "hash" in detector_names:
        parts.append(f"at most {threshold} of {bits} bits apart")
    if "embedding" in detector_names:
        parts.append(f"cosine similarity >= {similarity:g}")
    return " or ".join(parts)


def _cosine(pair: dict) -> str:
    return "" if pair["similarity"] is None else f"{pair['similarity']:.4f}"


def _pairs_markdown(name: str, pairs: list[dict], result: dict, png) -> str:
    lines = [f"# Near-duplicates in {name}", "",
             f"{result['pairs']} pair(s) {result['criterion']} "
             f"(hashes {', '.join(result['hashes'])}"
             + (f"; embeddings of {result['embedding']}" if result["embedding"] else "") + "): "
             f"{result['train_test_pairs']} train-test, "
             f"{result['within_split_pairs']} within one split, {result['against_pairs']} against other folders; "
             f"{result['test_images_with_duplicate']} test image(s) have a copy in train or another folder; "
             f"{result['cross_class_pairs']} pair(s) put one image under two classes (a label error too).", ""]
    if "accuracy" in result:
        a = result["accuracy"]
        lines += [f"Test accuracy of {a['run']}: {a['test_acc']:.4f} on {a['test_images']} images, "
                  f"{a['test_acc_without_duplicates']:.4f} on the {a['test_images_without_duplicates']} "
                  "without a duplicate.", ""]
    if png:
        lines += ["![pairs](pairs.png)", ""]
    lines += ["| kind | image | split | class | match | match source | match class | bits | cosine | detector |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {p['kind']} | {p['image']} | {p['split']} | {p['label']} | {p['match']} | {p['match_source']} "
              f"| {p['match_label']} | {p['distance']} | {_cosine(p)} "
              f"| {p['detector']} |" for p in pairs]
    return "\n".join(lines) + "\n"


def _labels(name, root, out: Path, run, model_name, weights, image_size, folds, top, seed, val_fraction,
            progress) -> dict:
    found = labelnoise.find_label_issues(name, root, run, model_name, weights, image_size, folds, seed,
                                         val_fraction, progress=progress)
    suspects = found["suspects"]
    runs.write_csv_atomic(out / "suspects.csv", suspects, SUSPECT_FIELDS)
    gallery.plot_suspects(suspects, out / "suspects.png", f"{name}: top {min(top, len(suspects))} of "
                          f"{len(suspects)} label-issue suspects ({found['features']}, {folds} folds)", limit=top)
    return {"features": found["features"], "feature_dim": found["feature_dim"], "folds": folds,
            "images": found["images"], "oof_acc": found["oof_acc"], "suspects": len(suspects)}


__all__ = ["AUDITS", "parse_what", "run_audit"]
