"""`fgvc zeroshot` and `fgvc clip ...` offline: missing weights are one sentence and exit code 2."""

import pytest

from fgvc.cli import main


@pytest.mark.parametrize("argv", [
    ["zeroshot", "--model", "ViT-B-32", "--pretrained", "openai"],
    ["clip", "probe", "--model", "ViT-B-16", "--pretrained", "openai"],
    ["clip", "finetune", "--model", "ViT-B-32", "--pretrained", "openai", "--epochs", "1"],
])
def test_clip_commands_offline_without_weights_exit_2(argv, tiny_synthbirds_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main([*argv, "--data", "synthbirds", "--root", str(tiny_synthbirds_root), "--offline",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "ViT-B" in err and "openai" in err
