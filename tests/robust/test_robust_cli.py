"""`fgvc attack` on a trained run, in-process."""

import json

from fgvc.cli import main


def test_attack_command_writes_table_plot_and_json(tiny_synthbirds_root, tiny_run, tmp_path, capsys):
    common = ["model.name=resnet18", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
              "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", "--quiet"]
    run_dir = str(tiny_run)
    assert main(["train", *common, "adv.attack=fgsm", "adv.eps=0.03"]) == 0
    adv_dir = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["attack", run_dir, "--eps", "0,0.1", "--limit", "16", "--compare", adv_dir]) == 0
    record = json.loads((tiny_run / "attack" / "fgsm.json").read_text())
    curves = list(record["accuracy"].values())
    assert len(curves) == 2 and record["total"] == 16
    for curve in curves:
        assert 0 <= curve["0.1"] <= curve["0"] <= 1  # an attack never raises accuracy above clean
    assert (tiny_run / "attack" / "fgsm.png").stat().st_size > 1000
    assert main(["attack", run_dir, "--eps", "0,2"]) == 2
    assert "eps" in capsys.readouterr().err
