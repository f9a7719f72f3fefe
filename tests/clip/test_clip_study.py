"""CLIP rows in a study file (seed Table 8): zero-shot and fine-tuning beside training rows, one table."""

import json

import pytest
import torch
from tinyclip import make_tiny_clip

from fgvc.errors import UserError
from fgvc.experiments.study import read_study, run_study


def _study(tmp_path, rows: str):
    path = tmp_path / "clipstudy.yaml"
    path.write_text("title: clip rows\noverrides: [model.name=test_resnet, data.image_size=32, train.epochs=1, "
                    "data.num_workers=0, data.name=synthbirds]\ncolumns: [test_acc, test_top5]\nrows:\n" + rows)
    return str(path)


def test_zeroshot_and_training_rows_share_one_table(tmp_path, tiny_model_name, tiny_synthbirds_root):
    weights = tmp_path / "tiny.pt"
    torch.save(make_tiny_clip(seed=3).state_dict(), weights)
    path = _study(tmp_path, f"  trained: []\n  zeroshot: {{task: zeroshot, model: {tiny_model_name}, "
                            f"pretrained: {weights}, batch_size: 8, device: cpu}}\n")
    folder = run_study(path, [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "out", progress=False)
    zs = json.loads((folder / "zeroshot" / "metrics.json").read_text())
    assert zs["task"] == "zeroshot" and zs["n_images"] == 32  # tiny synthbirds: 4 classes x 8 test images
    table = (folder / "table.md").read_text()
    assert f"| zeroshot | {zs['test_acc']:.4f} | {zs['test_top5']:.4f} |" in table
    assert "| trained |" in table


@pytest.mark.parametrize("row, message", [
    ("{task: zershot, model: M}", "task must be one of"),
    ("{task: zeroshot}", "name the CLIP model"),
    ("{task: zeroshot, model: M, epochs: 3}", "no argument 'epochs'"),
    ("7", "list of key=value overrides or a CLIP mapping"),
    ("{task: clip_finetune, model: M, epochs: ten}", "epochs must be a int"),
    ("{task: zeroshot, model: M, overrides: [train.epochs=2]}", "only data.\\* overrides"),
])
def test_a_bad_clip_row_is_refused_before_anything_runs(tmp_path, row, message):
    path = _study(tmp_path, f"  ok: []\n  bad: {row}\n")
    with pytest.raises(UserError, match=message):
        read_study(path)
        run_study(path, ["data.root=x"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
