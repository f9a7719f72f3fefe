"""`fgvc explain` in-process on a trained run."""

import json

from fgvc.cli import main


def test_explain_command_writes_panels_grid_and_localisation(tiny_synthbirds_root, tmp_path, capsys):
    assert main(["train", "model.name=resnet18", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
                 "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", "--quiet"]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["explain", run_dir, "--limit", "2", "--method", "cam,gradcam", "--save-maps"]) == 0
    out = tmp_path / run_dir.split("/")[-1] / "explain"
    assert (out / "grid.png").stat().st_size > 1000
    assert len(list(out.glob("0*.png"))) == 2
    scores = json.loads((out / "localization.json").read_text())
    assert "cam" in json.dumps(scores) and "gradcam" in json.dumps(scores)
    assert main(["explain", run_dir, "--method", "occlusion"]) == 2
