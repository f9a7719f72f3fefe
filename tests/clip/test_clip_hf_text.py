"""open_clip models whose tokenizer (SigLIP, CLIPA, ...) or text tower (RoBERTa, XLM-R, NLLB, mT5) comes from
Hugging Face transformers: one sentence before any download when transformers is missing, or when the
tokenizer is neither cached nor reachable."""

from __future__ import annotations

import importlib.util

import open_clip
import pytest

from fgvc.cli import main
from fgvc.clip import models

HF_TEXT = [m for m in open_clip.list_models()
           if (open_clip.get_model_config(m).get("text_cfg") or {}).get("hf_tokenizer_name")]


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("fgvc: ")]
    return line


@pytest.fixture
def no_transformers(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was started")

    monkeypatch.setattr(open_clip, "download_pretrained", refuse)
    monkeypatch.setattr(models, "reachable", refuse)


def test_every_hf_text_family_is_known():
    # SigLIP, SigLIP 2, CLIPA, worldwide, RoBERTa, XLM-RoBERTa, NLLB, mT5 and CoCa-RoBERTa: about 49 names
    assert len(HF_TEXT) >= 40 and "ViT-B-16-SigLIP" in HF_TEXT and "roberta-ViT-B-32" in HF_TEXT
    for name in HF_TEXT:
        assert models.hf_text_source(name)  # each one is recognised


@pytest.mark.parametrize("argv", [
    ["zeroshot", "--model", "ViT-B-16-SigLIP", "--pretrained", "none"],
    ["zeroshot", "--model", "ViT-B-16-SigLIP", "--pretrained", "webli"],
    ["clip", "probe", "--model", "roberta-ViT-B-32", "--pretrained", "laion2b_s12b_b32k"],
    ["clip", "finetune", "--model", "ViT-B-16-SigLIP2", "--pretrained", "none", "--epochs", "1"],
])
def test_hf_text_model_without_transformers_is_one_sentence_before_any_download(
        argv, no_transformers, no_downloads, tiny_synthbirds_root, tmp_path, capsys):
    code = main([*argv, "--data", "synthbirds", "--root", str(tiny_synthbirds_root), "--out", str(tmp_path / "o")])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "transformers" in line and "pip install transformers" in line
    assert argv[argv.index("--model") + 1] in line and "ViT-B-32" in line  # the model, and one that needs no transformers


def test_training_a_clip_tower_with_an_hf_text_model_without_transformers_is_one_sentence(
        no_transformers, tiny_synthbirds_root, tmp_path, capsys):
    code = main(["train", "model.name=clip:roberta-ViT-B-32", "data.name=synthbirds", "data.image_size=224",
                 f"data.root={tiny_synthbirds_root}", "train.epochs=1", f"out={tmp_path}", "--quiet"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "roberta-base" in line and "pip install transformers" in line


def test_hf_tokenizer_not_cached_and_offline_is_one_sentence_naming_the_repository(
        monkeypatch, no_downloads, tiny_synthbirds_root, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "transformers" else real(name, *a))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = main(["zeroshot", "--model", "ViT-B-16-SigLIP", "--pretrained", "none", "--offline", "--data",
                 "synthbirds", "--root", str(tiny_synthbirds_root), "--out", str(tmp_path / "o")])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "timm/ViT-B-16-SigLIP" in line and "not cached" in line
