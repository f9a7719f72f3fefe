"""Zero-shot by label matching: a pretrained classifier scored, with no training, on the dataset
classes whose common name is one of its own labels.

A bird specialist (the iNaturalist-2017 birds MobileNetV2, labels "Genus species (Common Name)")
already knows most CUB species; this measures how much before any fine-tuning, beside CLIP
zero-shot. Names are compared after lower-casing and turning '_', '-' and repeated spaces into
one space, with CUB's "NNN." prefix removed; an ImageNet-style label ("albatross, mollymawk")
offers each of its comma-separated names.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from fgvc.errors import UserError


def normalize_name(name: str) -> str:
    name = re.sub(r"^\d+\.", "", name.strip())  # CUB's "001.Black_footed_Albatross"
    name = re.sub(r"[_\-\s]+", " ", name.replace("'", "")).strip().lower()
    return name


def label_names(label: str) -> list[str]:
    """The common names a label offers: "Genus species (Common Name)" -> [common name, genus species]."""
    m = re.fullmatch(r"\s*(.+?)\s*\((.+)\)\s*", label)
    if m:
        return [normalize_name(m.group(2)), normalize_name(m.group(1))]
    return [normalize_name(part) for part in label.split(",") if part.strip()]


def read_labels(path: str | Path) -> list[str]:
    """One label per line; a line "N label" (a leading index, as Coral's label files have) keeps the label."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"labels file {path} does not exist; give the text file of the model's labels, one per line")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [re.sub(r"^\d+\s+", "", line).strip() for line in lines]


def match_classes(class_names: list[str], labels: list[str]) -> dict[int, int]:
    """{dataset class index: model output index} for every class whose name is one of a label's names."""
    index: dict[str, int] = {}
    for j, label in enumerate(labels):
        for name in label_names(label):
            index.setdefault(name, j)
    return {i: index[normalize_name(c)] for i, c in enumerate(class_names) if normalize_name(c) in index}


@torch.no_grad()
def label_match_accuracy(model, loader, mapping: dict[int, int], device="cpu") -> dict:
    """Top-1 on the images of matched classes, two ways: the argmax over all of the model's outputs
    (``acc_all_labels``) and over the matched labels only (``acc_matched_labels``, a closed-set
    problem of ``len(mapping)`` classes). ``loader`` yields (images in [0, 1], dataset labels, ...)."""
    if not mapping:
        raise UserError("no class of the dataset has a common name among the model's labels; check the labels file")
    outputs = torch.tensor(sorted(set(mapping.values())))  # the matched labels' output indices
    model.eval().to(device)
    n = all_hits = matched_hits = 0
    for x, y, *_ in loader:
        to_output = torch.full((max(int(y.max()), max(mapping)) + 1,), -1)  # dataset class -> output, -1: none
        to_output[list(mapping)] = torch.tensor(list(mapping.values()))
        target = to_output[y]
        keep = target >= 0
        if not keep.any():
            continue
        logits = model(x[keep].to(device)).float().cpu()
        target = target[keep]
        all_hits += int((logits.argmax(1) == target).sum())
        matched_hits += int((outputs[logits[:, outputs].argmax(1)] == target).sum())
        n += int(keep.sum())
    return {"matched_classes": len(mapping), "images": n, "acc_all_labels": all_hits / max(n, 1),
            "acc_matched_labels": matched_hits / max(n, 1)}


__all__ = ["label_match_accuracy", "label_names", "match_classes", "normalize_name", "read_labels"]
