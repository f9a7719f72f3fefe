"""Top-k predictions of a trained run for image files; ``top_classes`` is shared with ``fgvc serve``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from fgvc import api, runs
from fgvc.data.transforms import load_eval_image
from fgvc.errors import UserError
from fgvc.scored_checkpoint import unfinished_note


def top_classes(logits: torch.Tensor, class_names: list[str], topk: int = 5) -> list[dict]:
    """[{'class', 'index', 'prob'}, ...] of one image's (C,) logits: the k most probable classes
    (k capped at C), probabilities (softmax, in [0, 1]) rounded to 6 decimals, best first."""
    probs = logits.detach().float().softmax(dim=-1)
    top = probs.topk(max(1, min(topk, len(class_names))))
    return [{"class": class_names[i], "index": int(i), "prob": round(float(p), 6)}
            for p, i in zip(top.values.tolist(), top.indices.tolist())]


@torch.no_grad()
def predict_files(run_dir: str | Path, images: list[str | Path], topk: int = 5) -> list[dict]:
    """[{'image', 'top': [{'class', 'index', 'prob'}, ...]}] with probabilities in [0, 1]; ``topk`` larger than
    the number of classes gives them all. UserError when ``topk`` < 1 (before the model loads)."""
    if topk < 1:
        raise UserError(f"--topk {topk} asks for no classes; pass --topk 1 or more (default 5)")
    model, class_names = api.load(run_dir)
    cfg = runs.load_config(run_dir)
    data = cfg.data
    note = unfinished_note(runs.check_run_dir(run_dir), cfg.train.epochs, "predicting with")
    if note:
        print(note, file=sys.stderr)
    results = []
    for image in images:
        x = load_eval_image(Path(image), data.image_size, data.crop_ratio)  # decoded and cropped as evaluation does
        results.append({"image": str(image), "top": top_classes(model(x)[0], class_names, topk)})
    return results
