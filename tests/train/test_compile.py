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


@pytest.mark.parametrize("name", ["wsdan", "cal"])
def test_a_method_whose_training_passes_bypass_forward_refuses_train_compile(name, tiny_synthbirds_root, tmp_path,
                                                                             capsys):
    from fgvc.cli import main

    out = tmp_path / "runs"
    assert main(["train", *BASE, f"data.root={tiny_synthbirds_root}", "train.compile=true", f"method.name={name}",
                 f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"method.name={name} cannot train with train.compile=true" in err, err
    assert "set train.compile=false" in err and not out.exists()


@pytest.mark.parametrize("name, extra", [
    ("bilinear", ["method.bilinear_dim=4"]), ("isqrt_cov", ["method.isqrt_dim=4"]), ("pmg", ["method.pmg_width=8"]),
    ("api_net", ["method.api_hidden=8", "data.sampler=pk", "data.pk_images=2"])])
def test_the_other_methods_train_through_the_compiled_module(name, extra, tiny_synthbirds_root, tmp_path,
                                                             monkeypatch):
    from fgvc.methods import method_class

    assert method_class(name).takes_compile
    calls = []

    class Compiled(torch.nn.Module):  # stands for torch.compile's module: counts the training passes through it
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            if self.model.training and torch.is_grad_enabled():
                calls.append(kwargs)
            return self.model(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", lambda model, *args, **kwargs: Compiled(model))
    cfg = config.load(None, [*BASE, "data.image_size=32", f"data.root={tiny_synthbirds_root}", "train.compile=true",
                             f"method.name={name}", *extra])
    run_and_spy(cfg, tmp_path, stop_after_first_step=True)
    assert calls  # the first optimizer step's loss came through the compiled module
