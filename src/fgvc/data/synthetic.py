"""A generated fine-grained dataset: procedurally drawn birds that differ in a few small parts.

Every bird has the same body plan; a class is one combination of six attributes (crown
colour, wing-bar colour, breast colour, beak length, tail shape, eye ring). Class ``c``'s
attributes depend on ``c`` alone; any two classes differ in two to four attributes (at least
one a colour) and share the rest, so a class is told apart by small parts: the fine-grained
setting.
Instances vary in pose, flip, rotation, scale, position, plumage shade, background,
clutter, lighting and occasional occlusion. Same seed -> byte-identical files.

Written in the official CUB-200-2011 or Stanford Dogs layout, so ``cub.load`` and
``dogs.load`` read it like the real datasets (registry names ``synthbirds``/``synthdogs``).
"""

from __future__ import annotations

import io
import json
import math
import random
import shutil
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from fgvc.errors import UserError
from fgvc.runs import check_out_dir

# (name, RGB) palettes; names become part of the class name
CROWNS = (("Red", (205, 30, 35)), ("Yellow", (245, 215, 35)), ("Blue", (35, 75, 215)),
          ("Black", (20, 20, 22)), ("White", (245, 245, 240)), ("Orange", (245, 130, 20)),
          ("Purple", (130, 40, 160)), ("Green", (40, 150, 60)))
WING_BARS = (("White", (245, 245, 245)), ("Yellow", (245, 220, 40)), ("Red", (210, 35, 35)),
             ("Blue", (40, 90, 230)), ("Black", (25, 25, 25)))
BREASTS = (("Buff", (230, 205, 150)), ("Rufous", (185, 80, 35)), ("Grey", (140, 140, 145)),
           ("Yellow", (240, 215, 55)), ("Black", (25, 25, 25)), ("Cream", (245, 240, 215)))
BEAKS = (("Stub", 7.0), ("Sharp", 16.0), ("Long", 28.0))  # beak length in bird units (body is 64 long)
TAILS = ("Fan", "Fork", "Spike")
EYE_RINGS = (("", None), ("White_eyed", (250, 250, 250)), ("Yellow_eyed", (250, 225, 40)))
ATTRIBUTES = ("crown", "wing_bar", "breast", "beak", "tail", "eye_ring")
_SIZES = (len(CROWNS), len(WING_BARS), len(BREASTS), len(BEAKS), len(TAILS), len(EYE_RINGS))
MAX_CLASSES = 200  # as many as CUB-200; the class walk below reaches it in a few ms

# Instance variation. Measured with resnet18 from scratch on 8 classes x 40-48 images at 64 px:
# more rotation or clutter, or smaller birds, made the data unlearnable in a few epochs.
FRACTION = (0.7, 0.9)  # bird length (tail tip to beak tip, before rotation) over the image side
ROTATION = 15.0  # degrees, either way
CLUTTER = (1, 4)  # background shapes per image, [low, high)
OCCLUSION = 0.1  # chance of a leaf or twig in front of the bird
MUTE = 0.6  # pull of background and clutter colours towards grey, so that bird colours stand out

BACKGROUNDS = ((120, 170, 220), (95, 140, 80), (200, 185, 140), (150, 150, 150), (60, 90, 60),
               (175, 205, 230), (130, 105, 80), (210, 210, 200))
BODIES = ((120, 95, 70), (105, 100, 95), (140, 120, 90), (90, 80, 70), (150, 140, 120))
JPEG_QUALITY = 90
LAYOUTS = ("cub", "dogs")
MARKER = "fgvc_synthetic.json"  # written at the root; marks a generated dataset that may be overwritten


@lru_cache(maxsize=1)
def _class_codes() -> tuple[tuple[int, ...], ...]:
    """Attribute indices of classes 0..MAX_CLASSES-1: a seeded walk, each class 2-3 changes from a parent.

    Any two classes differ in at least two attributes, one of them a colour, and share the
    rest: close enough to be fine-grained, far enough for a small CNN to learn from 20 images.
    """
    rng = random.Random(20111)  # fixed, never the generation seed: class c means the same bird everywhere
    codes = [tuple(rng.randrange(n) for n in _SIZES)]
    while len(codes) < MAX_CLASSES:
        code = list(rng.choice(codes))
        for a in rng.sample(range(len(_SIZES)), rng.choice((2, 2, 3))):
            code[a] = (code[a] + rng.randrange(1, _SIZES[a])) % _SIZES[a]
        if all(sum(x != y for x, y in zip(code, o)) >= 2 and tuple(code[:3]) != o[:3] for o in codes):
            codes.append(tuple(code))
    return tuple(codes)


def class_attributes(c: int) -> dict[str, str]:
    """Attribute values of class ``c`` (0-based), e.g. {'crown': 'Red', 'beak': 'Long', 'eye_ring': ''}."""
    if not 0 <= c < MAX_CLASSES:
        raise UserError(f"synthetic class index {c} is out of range; use 0..{MAX_CLASSES - 1}")
    cr, wb, br, bk, tl, er = _class_codes()[c]
    return {"crown": CROWNS[cr][0], "wing_bar": WING_BARS[wb][0], "breast": BREASTS[br][0],
            "beak": BEAKS[bk][0], "tail": TAILS[tl], "eye_ring": EYE_RINGS[er][0]}


def class_name(c: int) -> str:
    """CUB-style readable name without number, e.g. 'Red_crowned_White_barred_Buff_breasted_Longbill_Forktail'."""
    a = class_attributes(c)
    parts = [f"{a['crown']}_crowned", f"{a['wing_bar']}_barred", f"{a['breast']}_breasted"]
    if a["eye_ring"]:
        parts.append(a["eye_ring"])
    return "_".join(parts + [f"{a['beak']}bill", f"{a['tail']}tail"])


def _jitter(rgb, rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in rgb)


def _draw_bird(code, rng: np.random.Generator, unit: float) -> Image.Image:
    """The bird facing right on a transparent RGBa canvas, ``unit`` pixels per bird unit."""
    cr, wb, br, bk, tl, er = code
    beak_len = BEAKS[bk][1] * rng.uniform(0.9, 1.1)
    body = _jitter(BODIES[rng.integers(len(BODIES))], rng, 15)
    wing = tuple(int(v * 0.7) for v in body)
    # canvas in bird units: x in [-62, 75], y in [-38, 36]; origin at the body centre
    x0, y0, w, h = -62, -38, 137, 74
    img = Image.new("RGBA", (int(w * unit) + 2, int(h * unit) + 2), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)

    def p(x, y):
        return ((x - x0) * unit, (y - y0) * unit)

    def box(xa, ya, xb, yb):
        return [*p(xa, ya), *p(xb, yb)]

    legs = (70, 60, 50)
    for lx in (-4, 7):
        d.line([p(lx, 12), p(lx - 3, 31)], fill=legs, width=max(1, int(2.5 * unit)))
        d.line([p(lx - 8, 31), p(lx + 3, 31)], fill=legs, width=max(1, int(2.5 * unit)))
    tail = TAILS[tl]
    if tail == "Fan":  # short and wide
        pts = [(-24, -6), (-52, -22), (-56, -8), (-56, 8), (-52, 22), (-24, 8)]
    elif tail == "Fork":  # long, deep V notch
        pts = [(-24, -7), (-60, -20), (-42, 0), (-60, 20), (-24, 7)]
    else:  # spike: long and narrow
        pts = [(-24, -6), (-61, -1), (-61, 2), (-24, 7)]
    d.polygon([p(*q) for q in pts], fill=wing)
    d.ellipse(box(-32, -19, 32, 19), fill=body)
    d.ellipse(box(-10, -6, 34, 22), fill=_jitter(BREASTS[br][1], rng, 12))
    # the wing bar is drawn only where the wing is, through the wing's own mask
    wing_mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(wing_mask).ellipse(box(-27, -14, 14, 9), fill=255)
    layer = Image.new("RGBA", img.size, wing + (255,))
    ImageDraw.Draw(layer).polygon([p(-13, -16), p(8, -16), p(0, 11), p(-21, 11)],
                                  fill=_jitter(WING_BARS[wb][1], rng, 12) + (255,))
    img.paste(layer, (0, 0), wing_mask)
    d = ImageDraw.Draw(img)
    d.polygon([p(40, -22), p(40, -12), p(40 + beak_len, -16)], fill=(55, 45, 35))
    head = box(13, -36, 49, 0)  # centre (31, -18), radius 18
    d.ellipse(head, fill=body)
    d.chord(head, 165, 375, fill=_jitter(CROWNS[cr][1], rng, 12))  # the crown: the top of the head
    ring = EYE_RINGS[er][1]
    if ring is not None:
        d.ellipse(box(29, -22, 41, -10), fill=_jitter(ring, rng, 8))
    d.ellipse(box(32.5, -18.5, 37.5, -13.5), fill=(10, 10, 10))
    return img.convert("RGBa")  # premultiplied, so resampling does not bleed black into the edges


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth colour field + blotches + fine noise + clutter (leaves, twigs, stones)."""
    base = np.array(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], np.float32) + rng.normal(0, 20, 3)
    coarse = rng.normal(0, 28, (4, 4, 3)).astype(np.float32)
    coarse = coarse * (1 - MUTE) + coarse.mean(-1, keepdims=True) * MUTE
    field = np.stack([np.asarray(Image.fromarray(coarse[..., i]).resize((size, size), Image.BICUBIC))
                      for i in range(3)], -1)
    grad = np.linspace(-1, 1, size, dtype=np.float32)[:, None, None] * rng.uniform(-25, 25)
    arr = base + field + grad + rng.normal(0, 6, (size, size, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(*CLUTTER))):
        _clutter(d, rng, size)
    return img


def _clutter(d: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, near=None) -> None:
    """One leaf, twig or stone; ``near`` = (x, y, w, h) puts it across that region (occlusion)."""
    colour = tuple(int(v * (1 - MUTE) + 120 * MUTE) for v in rng.integers(20, 235, 3))
    if near is None:
        cx, cy = rng.uniform(0, size, 2)
    else:
        x, y, w, h = near
        cx, cy = x + rng.uniform(0.1, 0.9) * w, y + rng.uniform(0.1, 0.9) * h
    kind = rng.integers(3)
    r = rng.uniform(0.05, 0.15) * size
    if kind == 0:
        d.ellipse([cx - r, cy - r * 0.5, cx + r, cy + r * 0.5], fill=colour)
    elif kind == 1:
        a = rng.uniform(0, math.pi)
        dx, dy = math.cos(a) * 2.5 * r, math.sin(a) * 2.5 * r
        d.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=colour, width=max(1, int(size * 0.035)))
    else:
        d.polygon([(cx + r * math.cos(t), cy + r * math.sin(t))
                   for t in np.sort(rng.uniform(0, 2 * math.pi, 5))], fill=colour)


def render_sample(c: int, k: int, size: int = 64, seed: int = 0, bird: bool = True
                  ) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Image ``k`` of class ``c`` as ``generate`` writes it (before JPEG) and the bird's box (x, y, w, h) in px.

    ``bird=False`` draws the very same scene without the bird (for tests of the box).
    """
    rng = np.random.default_rng([seed, c, k])
    code = _class_codes()[c]
    scene = _background(rng, size)
    unit = rng.uniform(*FRACTION) * size / 120.0  # a bird is about 120 units from tail to beak
    ss = 4 if size <= 128 else 2  # supersampling: draw larger, then shrink, for smooth edges
    sprite = _draw_bird(code, rng, unit * ss)
    if rng.random() < 0.5:
        sprite = sprite.transpose(Image.FLIP_LEFT_RIGHT)
    sprite = sprite.resize((max(1, round(sprite.width / ss)), max(1, round(sprite.height / ss))), Image.LANCZOS)
    # rotated at the final size: as smooth, and ss^2 times cheaper than before shrinking
    sprite = sprite.rotate(rng.uniform(-ROTATION, ROTATION), Image.BICUBIC, expand=True).convert("RGBA")
    alpha = sprite.getchannel("A").point(lambda v: 255 if v >= 48 else 0)
    left, top, right, bottom = alpha.getbbox() or (0, 0, 1, 1)
    sprite = sprite.crop((left, top, right, bottom))
    w, h = sprite.size
    # the whole bird inside the frame when it fits; else it touches the border and the box is clipped
    x = int(rng.integers(0, max(0, size - w) + 1))
    y = int(rng.integers(0, max(0, size - h) + 1))
    if bird:
        scene.paste(sprite, (x, y), sprite)
    box = (x, y, min(w, size - x), min(h, size - y))
    if rng.random() < OCCLUSION:  # partial occlusion by a leaf or twig in front of the bird
        _clutter(ImageDraw.Draw(scene), rng, size, near=box)
    # lighting: brightness, contrast and a small colour cast over the whole scene
    arr = np.asarray(scene, np.float32)
    gain = rng.uniform(0.82, 1.15) * rng.uniform(0.96, 1.04, 3)
    contrast = rng.uniform(0.9, 1.1)
    arr = (arr - 128.0) * contrast + 128.0  # fixed pivot: the scene without the bird gets the same lighting
    scene = Image.fromarray(np.clip(arr * gain, 0, 255).astype(np.uint8))
    return scene, box


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def _savemat(path: Path, data: dict) -> None:
    """scipy's savemat with a fixed header: its default text holds the current time."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, data, format="5")
    raw = bytearray(buf.getvalue())
    raw[:116] = b"MATLAB 5.0 MAT-file, written by fgvc.data.synthetic".ljust(116)
    path.write_bytes(bytes(raw))


def _cell(strings: list[str]) -> np.ndarray:
    """An (N, 1) object array of strings: what a MATLAB cell column looks like to scipy."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


def _items(classes: int, per_class: int, size: int, seed: int, n_test: int):
    """Rendered samples one at a time (so memory stays flat however large the dataset)."""
    split_rng = np.random.default_rng([seed, 1_000_003])
    for c in range(classes):
        test_ks = set(split_rng.permutation(per_class)[:n_test].tolist())
        for k in range(per_class):
            img, box = render_sample(c, k, size, seed)
            yield {"c": c, "k": k, "jpeg": _jpeg(img), "box": box, "test": k in test_ks}


def _write_cub(tmp: Path, items, n_classes: int) -> None:
    base = tmp / "CUB_200_2011"
    folders = [f"{c + 1:03d}.{class_name(c)}" for c in range(n_classes)]
    for f in folders:
        (base / "images" / f).mkdir(parents=True)
    lines = {k: [] for k in ("images", "image_class_labels", "train_test_split", "bounding_boxes")}
    for i, it in enumerate(items, start=1):
        rel = f"{folders[it['c']]}/{class_name(it['c'])}_{it['k'] + 1:04d}.jpg"
        (base / "images" / rel).write_bytes(it["jpeg"])
        lines["images"].append(f"{i} {rel}")
        lines["image_class_labels"].append(f"{i} {it['c'] + 1}")
        lines["train_test_split"].append(f"{i} {0 if it['test'] else 1}")
        lines["bounding_boxes"].append(f"{i} " + " ".join(f"{v:.1f}" for v in it["box"]))
    lines["classes"] = [f"{c + 1} {f}" for c, f in enumerate(folders)]
    for name, rows in lines.items():
        (base / f"{name}.txt").write_text("\n".join(rows) + "\n")


def _voc_xml(folder: str, stem: str, name: str, size: int, box) -> str:
    x, y, w, h = box
    return (f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{stem}</filename>\n"
            f"\t<source>\n\t\t<database>fgvc synthetic</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segment>0</segment>\n\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n"
            f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
            f"\t\t\t<xmin>{x}</xmin>\n\t\t\t<ymin>{y}</ymin>\n\t\t\t<xmax>{x + w}</xmax>\n\t\t\t<ymax>{y + h}</ymax>\n"
            f"\t\t</bndbox>\n\t</object>\n</annotation>\n")


def _write_dogs(tmp: Path, items, n_classes: int, size: int) -> None:
    wnids = [f"n{c + 1:08d}" for c in range(n_classes)]
    folders = [f"{wnids[c]}-{class_name(c)}" for c in range(n_classes)]
    for f in folders:
        (tmp / "Images" / f).mkdir(parents=True)
        (tmp / "Annotation" / f).mkdir(parents=True)
    (tmp / "lists").mkdir()
    rows = {"train": [], "test": [], "file": []}
    for it in items:
        c, stem = it["c"], f"{wnids[it['c']]}_{it['k'] + 1}"
        (tmp / "Images" / folders[c] / f"{stem}.jpg").write_bytes(it["jpeg"])
        # Stanford Dogs boxes: pixel edges, xmax = xmin + width
        (tmp / "Annotation" / folders[c] / stem).write_text(
            _voc_xml(wnids[c][1:], stem, class_name(c), size, it["box"]))
        row = (f"{folders[c]}/{stem}.jpg", f"{folders[c]}/{stem}", c + 1)
        rows["test" if it["test"] else "train"].append(row)
        rows["file"].append(row)
    for split, rs in rows.items():
        _savemat(tmp / "lists" / f"{split}_list.mat", {
            "file_list": _cell([r[0] for r in rs]),
            "annotation_list": _cell([r[1] for r in rs]),
            "labels": np.array([[r[2]] for r in rs], dtype=np.float64).reshape(-1, 1),
        })


def check_target(root, overwrite: bool, root_name: str = "root", overwrite_name: str = "overwrite=True") -> Path:
    """``root`` (expanded) when ``generate`` may write there: a new or empty folder, or a generated
    dataset with ``overwrite``. UserError otherwise, naming the arguments as the caller spells them
    (``root_name`` / ``overwrite_name``: the API's ``root`` / ``overwrite=True``, the CLI's ``--root`` /
    ``--overwrite``)."""
    root = check_out_dir(root, root_name)
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise UserError(f"{root} is not empty; choose another {root_name} or pass {overwrite_name} "
                            "to replace a generated dataset there")
        if not (root / MARKER).is_file():
            raise UserError(f"{root} is not empty and holds no {MARKER}, so it is not a generated "
                            f"dataset; refusing to delete it: choose another {root_name}")
    return root


def generate(root, classes: int = 10, per_class: int = 40, size: int = 64, seed: int = 0,
             layout: str = "cub", test_fraction: float = 0.5, overwrite: bool = False,
             progress: bool = False) -> Path:
    """Write ``classes`` x ``per_class`` square ``size``-px JPEG birds under ``root``; return ``root``.

    ``layout`` 'cub' writes ``root/CUB_200_2011/`` (with bounding_boxes.txt), 'dogs' writes
    ``Images/``, ``lists/`` and ``Annotation/``. ``test_fraction`` of each class is official test.
    The dataset is built in a hidden folder beside ``root`` and renamed into place at the end,
    so an interrupted run never leaves a half dataset. ``progress``: a tqdm bar over the images.
    UserError when ``root`` is a file, or a non-empty folder without ``overwrite`` (``check_target``).
    """
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not 2 <= classes <= MAX_CLASSES:
        raise UserError(f"classes={classes} is out of range; use 2..{MAX_CLASSES}")
    if not 0 <= test_fraction < 1:
        raise UserError(f"test_fraction={test_fraction} is out of range; use a value in [0, 1)")
    n_test = round(per_class * test_fraction)
    if per_class - n_test < 2:
        raise UserError(f"per_class={per_class} with test_fraction={test_fraction} leaves "
                        f"{per_class - n_test} train images per class; use at least 2 (one goes to val)")
    if size < 32:
        raise UserError(f"size={size} px is too small to draw a bird; use 32 or more")
    if seed < 0:
        raise UserError(f"seed={seed} is negative; use a seed >= 0")
    root = check_target(root, overwrite)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.fgvc-tmp-{uuid.uuid4().hex[:8]}"
    old = None
    try:
        tmp.mkdir()
        items = tqdm(_items(classes, per_class, size, seed, n_test), total=classes * per_class, desc="synthbirds",
                     unit="img", disable=not progress, leave=False)
        if layout == "cub":
            _write_cub(tmp, items, classes)
        else:
            _write_dogs(tmp, items, classes, size)
        info = {"generator": "fgvc.data.synthetic", "layout": layout, "classes": classes,
                "per_class": per_class, "size": size, "seed": seed, "test_fraction": test_fraction,
                "class_names": [class_name(c) for c in range(classes)],
                "class_attributes": [class_attributes(c) for c in range(classes)]}
        (tmp / MARKER).write_text(json.dumps(info, indent=1) + "\n")
        if root.exists():
            if any(root.iterdir()):  # overwrite was checked above: move the old dataset aside first
                old = root.parent / f".{root.name}.fgvc-old-{uuid.uuid4().hex[:8]}"
                root.rename(old)
            else:
                root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not root.exists():
            old.rename(root)
            old = None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return root
