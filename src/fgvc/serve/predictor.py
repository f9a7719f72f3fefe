"""The model behind ``fgvc serve``: top-5, Grad-CAM overlay and FGSM of one uploaded image.

Framework-free (torch, PIL, matplotlib only), so it is tested without a web server. Uploads
are decoded and cropped by ``fgvc.data.transforms.load_eval_image`` and ranked by
``fgvc.predict.top_classes``, the functions ``fgvc predict`` uses, so both answer alike.
Grad-CAM is ``fgvc.explain.gradcam`` (Selvaraju et al. 2017) drawn by
``fgvc.explain.overlay.overlay``; the attack is ``fgvc.robust.attacks.fgsm`` (Goodfellow et
al. 2015) against the model's own top-1 class (an upload carries no true label).
"""

from __future__ import annotations

import base64
import io
import re
import sys
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgvc import api
from fgvc.data.transforms import load_eval_image
from fgvc.errors import ImageTooLarge, UnreadableImage, UserError
from fgvc.explain import gradcam
from fgvc.explain.overlay import overlay
from fgvc.explain.run import small_feature_map
from fgvc.predict import top_classes
from fgvc.robust.attacks import resolve_attack
from fgvc.scored_checkpoint import unfinished_note

TOPK = 5
DECODE_SLOTS = 2  # uploads decoded at once; the others wait (a decoded photo can take hundreds of MB)
CAM_ALPHA = 0.5  # weight of the heat map in the overlay
CAM_CMAP = "jet"  # the colour map of fgvc explain's panels; the page's legend is drawn from the same stops
UNCERTAIN_PROB = 0.5  # top-1 below this ...
UNCERTAIN_MARGIN = 0.2  # ... or within this of the runner-up: the page says "uncertain"
MAX_EPS_255 = 64  # the largest FGSM budget the API takes, 64/255 (eps is in [0, 1], as `fgvc attack --eps`)
ATTACK = "fgsm"  # the demo's slider: one step, so the page answers at once (fgvc.robust.attacks.ATTACKS)

# how the demo's headline names datasets and models (others: the registry name as it is)
DATASET_TITLES = {"cub200": "CUB-200-2011 birds", "dogs": "Stanford Dogs", "synthbirds": "Generated birds",
                  "synthdogs": "Generated dogs", "aircraft": "FGVC-Aircraft variants",
                  "aircraft_family": "FGVC-Aircraft families", "aircraft_manufacturer": "FGVC-Aircraft manufacturers",
                  "cars": "Stanford Cars", "nabirds": "NABirds", "flowers102": "Oxford Flowers-102"}
MODEL_TITLES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50", "resnet101": "ResNet-101",
                "resnet152": "ResNet-152", "resnext101_32x8d": "ResNeXt-101 32x8d", "vit_b_16": "ViT-B/16",
                "vit_l_16": "ViT-L/16", "mobilenetv2_100": "MobileNetV2", "tf_mobilenetv2_100": "MobileNetV2",
                "mobilenetv2_140": "MobileNetV2 1.4", "tf_mobilenetv2_140": "MobileNetV2 1.4"}
STANDARD_ROOTS = {"", ".", "cub200", "cub_200_2011", "dogs", "stanforddogs", "stanford_dogs", "synthbirds", "data"}


class RequestError(Exception):
    """An upload the client can fix: answered with HTTP ``status`` and this one sentence."""

    def __init__(self, status: int, sentence: str):
        super().__init__(sentence)
        self.status = status


def class_label(name: str) -> str:
    """A class folder name as people read it: '017.Cardinal_Grosbeak' -> 'Cardinal Grosbeak (17)'."""
    m = re.fullmatch(r"(\d+)[._-](.+)", name)
    text = (m.group(2) if m else name).replace("_", " ").strip() or name
    return f"{text} ({int(m.group(1))})" if m else text


def dataset_title(name: str, root: str | Path) -> str:
    """'birds50 (CUB layout)' for a CUB-layout folder named birds50, 'CUB-200-2011 birds' for the real one."""
    folder = Path(str(root)).name
    title = DATASET_TITLES.get(name, name)
    if name in ("cub200", "dogs", "folder") and folder.lower() not in STANDARD_ROOTS:
        return f"{folder} ({'CUB' if name == 'cub200' else 'Stanford Dogs' if name == 'dogs' else 'folder'} layout)"
    return title


def png_base64(hwc: np.ndarray) -> str:
    """An (H, W, 3) float array in [0, 1] as a base64 PNG."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(hwc, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def cam_legend(steps: int = 11) -> list[str]:
    """Hex colours of CAM_CMAP at 0, 0.1, ..., 1 (low to high evidence): the page's legend gradient."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps[CAM_CMAP]
    return [to_hex(cmap(i / (steps - 1))) for i in range(steps)]


def confidence(top: list[dict]) -> dict:
    """{'uncertain': bool, 'hint': sentence or None}: uncertain when top-1 < UNCERTAIN_PROB or the runner-up
    is within UNCERTAIN_MARGIN of it."""
    p1 = top[0]["prob"]
    p2 = top[1]["prob"] if len(top) > 1 else 0.0
    if p1 >= UNCERTAIN_PROB and p1 - p2 >= UNCERTAIN_MARGIN:
        return {"uncertain": False, "hint": None}
    why = (f"the top class has only {100 * p1:.0f}%" if p1 < UNCERTAIN_PROB
           else f"the runner-up is close ({100 * p1:.0f}% vs {100 * p2:.0f}%)")
    return {"uncertain": True, "hint": f"uncertain: {why}; the image may show none of the classes, "
                                       "or the model cannot tell these apart"}


def parse_eps_value(eps: float | str) -> float:
    """One FGSM budget in [0, MAX_EPS_255 / 255] from a number or a fraction ("0.03", "8/255"); RequestError
    (422) otherwise, naming the unit (a client that sends 0..255 grey levels is told to divide by 255)."""
    text = str(eps).strip()
    num, slash, den = text.partition("/")
    try:
        value = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError):
        value = float("nan")
    if value != value:
        raise RequestError(422, f"eps={text!r} is not a number; give the budget in [0, 1] as `fgvc attack --eps` "
                                "takes it, e.g. 0.0157 or 4/255")
    if not 0 <= value <= MAX_EPS_255 / 255:
        hint = f" (in grey levels that is {text}/255)" if 1 < value <= 255 else ""
        raise RequestError(422, f"eps={text} is outside [0, {MAX_EPS_255}/255]: eps is in [0, 1] as `fgvc attack "
                                f"--eps` takes it, e.g. 0.0157 or 4/255{hint}")
    return value


class Predictor:
    """A run's model, loaded once. ``predict``, ``explain`` and ``attack`` take the bytes of an image file
    and are thread-safe (one lock around the model: Grad-CAM's hooks live on it)."""

    def __init__(self, run_dir: str | Path, decode_slots: int = DECODE_SLOTS):
        run = api.Run(run_dir)
        self.run_dir, self.config, self.class_names = run.dir, run.config, run.class_names
        self.model = run.model()
        self.image_size, self.crop_ratio = run.image_size, run.crop_ratio
        self.metrics = run.metrics
        note = unfinished_note(run.dir, run.config.train.epochs, "serving")
        if note:
            print(note, file=sys.stderr)
        self.lock = threading.Lock()
        self.decode_slots = threading.BoundedSemaphore(decode_slots)
        self._small_map: str | None | bool = False  # computed on the first explain

    def info(self) -> dict:
        """What the page's headline and legend need: names, sizes, accuracy, CAM colour stops."""
        model_name = getattr(self.model, "name", self.config.model.name)
        dataset = dataset_title(self.config.data.name, self.config.data.root)
        model = MODEL_TITLES.get(model_name, model_name)
        return {"title": f"{dataset} · {model}", "dataset": dataset, "model": model, "model_name": model_name,
                "run": self.run_dir.resolve().name, "classes": self.class_names,
                "class_labels": [class_label(c) for c in self.class_names], "image_size": self.image_size,
                "test_acc": self.metrics.get("test_acc"), "cam_method": "gradcam", "cam_legend": cam_legend(),
                "max_eps": MAX_EPS_255 / 255, "max_eps_255": MAX_EPS_255}

    def predict(self, data: bytes, topk: int = TOPK) -> dict:
        """{'top': [{'class', 'label', 'index', 'prob'}], 'uncertain', 'hint', 'input_png_base64'}."""
        x = self.input(data)
        with self.lock, torch.no_grad():
            top = self._top(self.model(x)[0], topk)
        return {"top": top, **confidence(top), "input_png_base64": png_base64(x[0].permute(1, 2, 0).numpy())}

    def explain(self, data: bytes, target: int | None = None) -> dict:
        """Grad-CAM of ``target`` (default: the top-1 class) as an overlay PNG at the model's input size,
        with the explained class, the legend's colours and a note when the map cannot localise."""
        x = self.input(data)
        if target is not None and not 0 <= target < len(self.class_names):
            raise RequestError(422, f"target={target} is not a class index; use 0 to {len(self.class_names) - 1}")
        with self.lock:
            if target is None:
                with torch.no_grad():
                    target = int(self.model(x)[0].argmax())
            try:
                heatmap, note = gradcam(self.model, x, target=target)[0], self._small_feature_map(x)
            except UserError as e:  # a model without a usable default layer still predicts
                heatmap, note = None, str(e)
        if heatmap is not None and not bool(heatmap.any()):
            note = "the Grad-CAM map is flat: no region stands out at this input size"
        return {"cam_method": "gradcam", "target": target, "target_class": self.class_names[target],
                "target_label": class_label(self.class_names[target]), "cam_note": note, "cam_legend": cam_legend(),
                "cam_png_base64": None if heatmap is None else png_base64(overlay(x[0], heatmap, CAM_ALPHA, CAM_CMAP))}

    def attack(self, data: bytes, eps: float | str, topk: int = TOPK) -> dict:
        """FGSM with budget ``eps`` in [0, 1] (a number, or a fraction such as "8/255": the unit of
        ``fgvc attack --eps``, ``adv.eps`` and ``fgvc.robust.fgsm``) against the clean top-1 class: the
        adversarial image, the perturbation (mid-grey = 0, scaled to +-eps), and the top-k before and after;
        ``eps_255`` and ``linf_255`` give the same budgets in grey levels of 0..255 beside them."""
        eps = parse_eps_value(eps)
        eps_255 = eps * 255
        x = self.input(data)
        with self.lock:
            with torch.no_grad():
                clean = self._top(self.model(x)[0], topk)
            x_adv = resolve_attack(ATTACK, eps).run(self.model, x, torch.tensor([clean[0]["index"]]))
            with torch.no_grad():
                adv = self._top(self.model(x_adv)[0], topk)
        delta = (x_adv - x)[0]
        shown = 0.5 + delta / (2 * eps) if eps > 0 else torch.full_like(delta, 0.5)
        return {"attack": ATTACK, "eps": eps, "eps_255": eps_255, "target": "top-1 class",
                "linf": float(delta.abs().max()), "linf_255": round(float(delta.abs().max()) * 255, 4), "top_clean": clean, "top_adv": adv,
                "flipped": adv[0]["index"] != clean[0]["index"], **{f"adv_{k}": v for k, v in confidence(adv).items()},
                "adv_png_base64": png_base64(x_adv[0].permute(1, 2, 0).numpy()),
                "delta_png_base64": png_base64(shown.permute(1, 2, 0).numpy())}

    def input(self, data: bytes) -> torch.Tensor:
        """The model's (1, 3, S, S) input in [0, 1]; the full-size decoded image lives only inside a decode slot."""
        if not data:
            raise RequestError(400, "the upload is empty; choose an image file (JPEG, PNG, BMP, GIF or WebP)")
        with self.decode_slots:
            try:
                return load_eval_image(io.BytesIO(data), self.image_size, self.crop_ratio)  # as fgvc predict
            except ImageTooLarge:
                raise RequestError(413, f"the image has more than {Image.MAX_IMAGE_PIXELS} pixels; "
                                        "send a smaller one") from None
            except UnreadableImage:
                raise RequestError(415, "the upload cannot be decoded as an image; send a JPEG, PNG, "
                                        "BMP, GIF or WebP file") from None

    def _top(self, logits: torch.Tensor, topk: int) -> list[dict]:
        return [{**t, "label": class_label(t["class"])} for t in top_classes(logits, self.class_names, topk)]

    def _small_feature_map(self, x: torch.Tensor) -> str | None:
        """fgvc explain's warning when the last feature map is under ~7x7 (computed once per run)."""
        if self._small_map is False:
            self._small_map = small_feature_map(self.model, x, self.image_size)
        return self._small_map
