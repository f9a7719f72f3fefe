"""train.compile: the model that trains is torch.compile's, and the checkpoints stay plain."""

import lightning_fabric  # noqa: F401  (first: it wraps torch.compile, which the monkeypatch below then restores)
import pytest
import torch
from wiring_helpers import run_and_spy

from fgvc import config, runs
from fgvc.models.factory import Classifier

BASE = ["model.name=test_resnet", "data.image_size=16", "data.num_workers=0", "data.name=synthbirds",
        "train.batch_size=8", "train.precision=32-true", "train.epochs=1"]


def test_train_compile_compiles_the_model_that_trains(tiny_synthbirds_root, tmp_path, monkeypatch):
    compiled = []

    def recorded(model, *args, **kwargs):
        compiled.append(model)
        return model  # compiling for real is the slow test below

    monkeypatch.setattr(torch, "compile", recorded)
    run_and_spy(config.load(None, [*BASE, f"data.root={tiny_synthbirds_root}", "train.compile=true"]),
                tmp_path / "on", stop_after_first_step=True)
    assert len(compiled) == 1 and isinstance(compiled[0], Classifier)
    compiled.clear()
    run_and_spy(config.load(None, [*BASE, f"data.root={tiny_synthbirds_root}"]), tmp_path / "off",
                stop_after_first_step=True)
    assert compiled == []


@pytest.mark.slow
def test_a_compiled_run_trains_and_its_checkpoint_loads_into_a_plain_model(tiny_synthbirds_root, tmp_path):
    from fgvc.api import build_model
    from fgvc.train import train

    cfg = config.load(None, [*BASE, f"data.root={tiny_synthbirds_root}", "train.compile=true", f"out={tmp_path}"])
    run_dir = train(cfg, progress=False)
    state = runs.load_weights(run_dir / "checkpoints" / "best.safetensors")
    assert not any("_orig_mod" in k for k in state)
    build_model(cfg, 4).load_state_dict(state)  # strict: every key of the plain model
