"""`fgvc explain` in-process on a trained run."""

import json

from fgvc.cli import main


def test_explain_command_writes_panels_grid_and_localisation(tiny_run, tmp_path):
    out = tmp_path / "explain"
    assert main(["explain", str(tiny_run), "--limit", "2", "--method", "cam,gradcam", "--save-maps",
                 "--out", str(out)]) == 0
    assert (out / "grid.png").stat().st_size > 1000
    assert len(list(out.glob("0*.png"))) == 2
    scores = json.loads((out / "localization.json").read_text())
    assert "cam" in json.dumps(scores) and "gradcam" in json.dumps(scores)
    assert main(["explain", str(tiny_run), "--method", "occlusion"]) == 2
