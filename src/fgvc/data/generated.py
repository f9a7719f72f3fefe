"""Generated images as training data (seed §2.4/§3.5): mix a `fgvc gan sample` folder into a real train split.

``source`` is ``real`` (nothing changes), ``real+generated`` (the real train split plus
``ratio`` generated images per real one: the Naive Augmentation Score setting) or
``generated`` (generated images only, tested on the real test split: the Classification
Accuracy Score of Ravuri & Vinyals 2019). Generated class folders are matched to the real
classes by name, so a generator trained on the same dataset lines up.
"""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import unquote

from fgvc.data.base import FineGrainedDataset, Sample
from fgvc.data.folder import class_dirs, image_files
from fgvc.errors import UserError

SOURCES = ("real", "real+generated", "generated")


def mix_generated(real: FineGrainedDataset, generated_root: str | Path, source: str, ratio: float = 1.0,
                  seed: int = 0) -> FineGrainedDataset:
    """The training set for ``source``: real, real + round(ratio * len(real)) generated, or all generated."""
    if source not in SOURCES:
        raise UserError(f"data.train_source={source!r} is not one of {', '.join(SOURCES)}")
    if source == "real":
        return real
    if not generated_root:
        raise UserError(f"data.train_source={source} needs data.generated_root (a folder written by `fgvc gan sample`)")
    split_dir = Path(generated_root).expanduser() / "train"
    if not split_dir.is_dir():
        raise UserError(f"{split_dir} does not exist; data.generated_root must be a folder written by "
                        "`fgvc gan sample RUN_DIR --per-class N --out DIR`")
    index = {name: i for i, name in enumerate(real.class_names)}
    generated, seen = [], {}  # one `seen` for all class folders: a link between two of them is refused
    for folder_name, folder in class_dirs(split_dir).items():
        name = unquote(folder_name)  # `fgvc gan sample` percent-encodes '/' and '%' (gan.synthesize.class_folder)
        if name not in index:
            raise UserError(f"generated class folder {folder} matches no class of the real dataset; "
                            "sample from a GAN trained on the same dataset")
        generated += [Sample(path, index[name]) for path in image_files(folder, seen)]
    if not generated:
        raise UserError(f"{split_dir} holds no images")
    if source == "generated":
        samples = generated
    else:
        n = min(len(generated), round(ratio * len(real)))
        samples = real.samples + random.Random(seed).sample(generated, n)
    return FineGrainedDataset(samples, real.class_names, real.transform, name=f"{real.name}+{source}")
