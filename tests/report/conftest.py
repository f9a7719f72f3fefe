"""A runs folder built from tiny real runs, shared by the report tests:

- ``plain``: a 1-epoch resnet18 on tiny synthbirds, evaluated (confusion_test.png), explained
  (explain/grid.png) and attacked (FGSM at eps 0 and 0.1 on 8 test images);
- ``smoothed``: the same recipe with one key changed (aug.label_smoothing=0.1);
- ``crashed``: a run folder with plain's config.yaml and two epochs of history but no metrics.json;
- a 2-iteration GAN run (meta.json, samples/iter_000002.png);
- ``zeroshot-x``: a CLIP zero-shot metrics.json (no CLIP weights are needed to report one).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from report_helpers import ATTACK_EPS, ATTACK_IMAGES, RECIPE

from fgvc import config


def _train(root: Path, out: Path, name: str, extra: list[str]) -> Path:
    from fgvc.train import train

    cfg = config.load(None, [*RECIPE, f"data.root={root}", f"out={out}", *extra])
    return train(cfg, run_dir=out / name, progress=False)


@pytest.fixture(scope="session")
def report_runs(tiny_synthbirds_root, tmp_path_factory) -> dict:
    """{"root": runs folder, "plain", "smoothed", "crashed", "gan", "zeroshot": run folders}."""
    from fgvc.evaluation import eval_run
    from fgvc.explain.run import explain_run
    from fgvc.gan import train_gan
    from fgvc.gan.config import GanConfig, GanDataConfig
    from fgvc.robust.run import attack_run

    root = tmp_path_factory.mktemp("report") / "runs"
    plain = _train(tiny_synthbirds_root, root, "plain", [])
    smoothed = _train(tiny_synthbirds_root, root, "smoothed", ["aug.label_smoothing=0.1"])
    eval_run(plain, progress=False)
    explain_run(plain, limit=2, localization=False, log=None)
    attack_run(plain, "fgsm", ATTACK_EPS, limit=ATTACK_IMAGES, device="cpu", progress=False)

    crashed = root / "crashed"
    crashed.mkdir()
    shutil.copy(plain / "config.yaml", crashed / "config.yaml")
    history = (plain / "history.csv").read_text().splitlines()
    second = history[1].split(",")
    second[0] = "2"
    (crashed / "history.csv").write_text("\n".join([*history[:2], ",".join(second)]) + "\n")

    gan = train_gan(GanConfig(data=GanDataConfig(name="synthbirds", root=str(tiny_synthbirds_root), image_size=32,
                                                 num_workers=0),
                              iterations=2, batch_size=8, n_dis=1, ch=8, z_dim=16, sample_every=0,
                              checkpoint_every=2, sample_classes=4, device="cpu", out=str(root)), progress=False)

    zeroshot = root / "zeroshot-x"
    zeroshot.mkdir()
    (zeroshot / "metrics.json").write_text(json.dumps({"task": "zeroshot", "model": "ViT-B-16", "test_acc": 0.25,
                                                       "test_top5": 0.5}))
    return {"root": root, "plain": plain, "smoothed": smoothed, "crashed": crashed, "gan": gan, "zeroshot": zeroshot}
