"""Files handed to fgvc never run code: a malicious pickle is refused everywhere fgvc loads a .pt file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from reliability_helpers import FAST, Evil, one_line_error

from fgvc import config, runs
from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.train import train


@pytest.fixture
def evil_pt(tmp_path) -> tuple[Path, Path]:
    """(a .pt file whose unpickling writes a marker file, that marker's path)."""
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 0, "payload": Evil(marker)}, path)
    return path, marker


def test_the_malicious_file_really_runs_code_when_unpickled(evil_pt, tmp_path):
    # the control: without weights_only the payload runs, so the tests below test something
    path, marker = evil_pt
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.fixture(scope="module")
def finished_run(tiny_synthbirds_root, tmp_path_factory) -> Path:
    cfg = config.load(None, [*FAST, f"data.root={tiny_synthbirds_root}", "train.epochs=1",
                             f"out={tmp_path_factory.mktemp('runs')}"])
    return train(cfg, progress=False)


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / finished_run.name))


def test_load_state_refuses_a_malicious_pickle(evil_pt):
    path, marker = evil_pt
    with pytest.raises(UserError, match="cannot be loaded safely"):
        runs.load_state(path)
    assert not marker.exists()


def test_resume_from_a_malicious_training_state_is_refused(run_copy, evil_pt, capsys):
    path, marker = evil_pt
    shutil.copy(path, run_copy / "checkpoints" / "last_state.pt")
    # one more epoch: the state must be read (a finished run resumed as it is reads nothing)
    assert main(["train", "--resume", str(run_copy), "--quiet", "train.epochs=2"]) == 2
    assert "last_state.pt cannot be loaded safely" in one_line_error(capsys.readouterr())
    assert not marker.exists()


def test_a_pickle_in_place_of_the_weights_is_refused(run_copy, evil_pt, capsys):
    path, marker = evil_pt
    shutil.copy(path, run_copy / "checkpoints" / "best.safetensors")
    image = next((Path(config.load(run_copy / "config.yaml").data.root) / "CUB_200_2011" / "images").rglob("*.jpg"))
    assert main(["predict", str(run_copy), str(image)]) == 2
    assert "not a valid safetensors file" in one_line_error(capsys.readouterr())
    assert not marker.exists()


def test_a_malicious_pretrained_weights_file_in_the_torch_cache_is_refused(evil_pt, tmp_path, monkeypatch):
    from fgvc.models import create_model
    from fgvc.models.factory import TORCHVISION_MODELS

    path, marker = evil_pt
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / Path(TORCHVISION_MODELS["resnet18"][1].url).name
    cached.parent.mkdir(parents=True)
    shutil.copy(path, cached)
    with pytest.raises(UserError, match="cannot be read"):
        create_model("resnet18", 4, pretrained=True)
    assert not marker.exists()


def test_a_malicious_clip_weights_file_is_refused(evil_pt, tmp_path):
    import json

    import open_clip

    from fgvc.clip.models import load_clip

    name = "fgvc-reliability-tiny-clip"
    (tmp_path / f"{name}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(tmp_path)
    path, marker = evil_pt
    with pytest.raises(UserError, match="holds pickled objects that could run code"):
        load_clip(name, str(path), download=False)
    assert not marker.exists()


def test_a_malicious_gan_state_is_refused(evil_pt, tmp_path):
    from fgvc.gan import checkpoint

    path, marker = evil_pt
    shutil.copy(path, tmp_path / "state.pt")
    with pytest.raises(UserError, match="cannot be loaded safely"):
        checkpoint.load_state(tmp_path)
    assert not marker.exists()


def test_a_yaml_config_with_a_python_tag_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.yaml"
    path.write_text(f"train:\n  lr: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["train", str(path)]) == 2
    assert "is not valid YAML" in one_line_error(capsys.readouterr())
    assert not marker.exists()
