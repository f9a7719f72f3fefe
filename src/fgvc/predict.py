"""Top-k predictions of a trained run for image files."""

from __future__ import annotations

from pathlib import Path

import torch

from fgvc import runs
from fgvc.data.transforms import load_eval_image


@torch.no_grad()
def predict_files(run_dir: str | Path, images: list[str | Path], topk: int = 5) -> list[dict]:
    """[{'image', 'top': [{'class', 'index', 'prob'}, ...]}] with probabilities in [0, 1]."""
    model, class_names = runs.load(run_dir)
    size = runs.load_config(run_dir).data.image_size
    k = max(1, min(topk, len(class_names)))
    results = []
    for image in images:
        x = load_eval_image(Path(image), size)  # decoded and cropped exactly as evaluation does
        probs = model(x).softmax(dim=1)[0]
        top = probs.topk(k)
        results.append({"image": str(image), "top": [
            {"class": class_names[i], "index": int(i), "prob": round(float(p), 6)}
            for p, i in zip(top.values.tolist(), top.indices.tolist())]})
    return results
