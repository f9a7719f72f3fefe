"""timm models made for one input size (swin, swinv2, MaxViT, CoAtNet, CoaT, DeiT, EVA, ...) are
built for data.image_size, or refused in one sentence before a run directory exists."""

import pytest
import torch

from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.models import create_model


@pytest.mark.parametrize("name,size", [
    ("swin_tiny_patch4_window7_224", 64),  # timm: "Input height (64) doesn't match model (224)"
    ("swinv2_tiny_window8_256", 64),
    ("test_maxvit", 64),
    ("test_coatnet", 64),
    ("coat_lite_tiny", 96),
    ("deit_tiny_patch16_224", 96),
    ("eva02_tiny_patch14_224", 56),
])
def test_fixed_size_timm_families_are_built_for_the_configured_size(name, size):
    torch.manual_seed(0)
    model = create_model(name, 3, image_size=size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_a_size_the_architecture_cannot_take_is_one_sentence():
    # MaxViT's windows must tile every stage: 100 px gives a 25 px stage for windows of 3
    with pytest.raises(UserError, match=r"'test_maxvit' cannot take 100x100 images .*data\.image_size=160"):
        create_model("test_maxvit", 3, image_size=100)


def test_train_refuses_the_size_with_exit_2_and_leaves_no_run_directory(tiny_synthbirds_root, tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["train", "model.name=test_maxvit", "data.image_size=100", "data.name=synthbirds",
                 f"data.root={tiny_synthbirds_root}", f"out={out}", "train.epochs=1", "data.num_workers=0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.strip().count("\n") == 0 and "cannot take 100x100" in err
    assert not out.exists() or not any(out.iterdir())


def test_train_runs_a_fixed_size_family_at_another_size(tiny_synthbirds_root, tmp_path, capsys):
    code = main(["train", "model.name=test_maxvit", "data.image_size=64", "data.name=synthbirds",
                 f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", "train.epochs=1", "train.batch_size=16",
                 "data.num_workers=0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert len(list(tmp_path.glob("*/metrics.json"))) == 1
