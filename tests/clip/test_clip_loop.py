"""CLIP fine-tuning through the classifier loop (model.name=clip:...): the zero-shot head it starts
from, learning, WiSE-FT, resume, trainable depth, and a run every analysis reads."""

import json

import pytest
import torch
from tinyclip import make_tiny_clip

from fgvc import api, config, runs
from fgvc.api import build_model
from fgvc.cli import main
from fgvc.clip.classifier import clip_classifier
from fgvc.clip.finetune import finetune_config, run_finetune, score_wise_ft, wise_ft
from fgvc.clip.prompts import prompt_names
from fgvc.clip.zeroshot import zeroshot_weights
from fgvc.errors import UserError
from fgvc.train import evaluate

EXACT = ["train.precision=32-true"]  # fp32 everywhere: scores compared across runs and scorers are equal


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("tinyclip") / "tiny.pt"
    torch.save(make_tiny_clip(seed=1).state_dict(), path)
    return path


def _kwargs(**extra):
    return {"epochs": 8, "batch_size": 8, "lr": 2e-3, "weight_decay": 0.01, "augment": False, "device": "cpu", "num_workers": 0,
            "download": False, "progress": False, "overrides": EXACT, **extra}


@pytest.fixture(scope="module")
def clip_run(tiny_model_name, weights, synthbirds_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "run"
    metrics = run_finetune(tiny_model_name, str(weights), "synthbirds", synthbirds_root, out, **_kwargs())
    return out, metrics


def test_fine_tuning_moves_well_above_the_zero_shot_head_it_starts_from(clip_run, weights):
    from fgvc.models.weights import sha256_file

    out, metrics = clip_run
    assert metrics["task"] == "clip_finetune" and metrics["epochs_run"] == 8
    assert metrics["test_acc"] >= metrics["zeroshot_test_acc"] + 0.25, metrics["wise_ft"]
    assert metrics["test_acc"] >= 3 / 8, metrics  # chance is 1/8
    assert metrics["protocol"]["pretrained"]["source"] == "open_clip"
    assert metrics["pretrained"]["sha256"] == sha256_file(weights)  # the weights file given as the tag, hashed
    # the loop's contract: history, best checkpoint, resumable state, curves
    assert (out / "history.csv").read_text().count("\n") == 9
    assert (out / "checkpoints" / "best.safetensors").is_file() and (out / "checkpoints" / "last_state.pt").is_file()


def test_the_head_starts_as_the_scaled_text_embeddings_of_the_prompts(clip_run, tiny_model_name, tokenizer):
    out, _ = clip_run
    run = api.Run(out)
    model = build_model(run.config, 8, run.class_names)
    clip = make_tiny_clip(seed=1)
    names = prompt_names(run.class_names, "synthbirds")
    expected = zeroshot_weights(clip, tokenizer, names, ["a photo of a {}."]) * clip.logit_scale.exp()
    assert torch.allclose(model.head.weight, expected.detach(), atol=1e-5)
    assert torch.equal(model.head.bias, torch.zeros(8))


def test_wise_ft_path_ends_at_the_zero_shot_and_the_fine_tuned_model(clip_run):
    out, metrics = clip_run
    run = api.Run(out)
    curve = metrics["wise_ft"]
    assert [r["alpha"] for r in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve[-1]["test_acc"] == metrics["test_acc"]  # alpha 1 is the best checkpoint
    loader = torch.utils.data.DataLoader(run.dataset("test"), batch_size=16)
    zeroshot = build_model(run.config, 8, run.class_names).eval()
    assert curve[0]["test_acc"] == evaluate(zeroshot, loader)["acc"] == metrics["zeroshot_test_acc"]
    best = max(curve, key=lambda r: (r["val_acc"], r["alpha"]))
    assert metrics["wise_ft_alpha"] == best["alpha"] and metrics["wise_ft_test_acc"] == best["test_acc"]
    assert (out / "wise_ft.csv").read_text().splitlines()[0] == "alpha,val_acc,test_acc,test_top5"


def test_wise_ft_interpolates_between_two_real_checkpoints(clip_run):
    out, _ = clip_run
    run = api.Run(out)
    zs, ft = build_model(run.config, 8, run.class_names).state_dict(), run.model().state_dict()
    mid = wise_ft(zs, ft, 0.5)
    key = "net.visual.conv1.weight"
    assert torch.allclose(mid[key], (zs[key] + ft[key]) / 2) and not torch.equal(zs[key], ft[key])


def test_every_analysis_reads_a_clip_run(clip_run, capsys):
    out, metrics = clip_run
    assert main(["eval", str(out), "--device", "cpu", "--precision", "32-true"]) == 0
    assert json.loads((out / "eval_test.json").read_text())["acc"] == pytest.approx(metrics["test_acc"])
    assert main(["attack", str(out), "--eps", "0,0.1", "--limit", "8", "--device", "cpu"]) == 0
    model, names = api.load(out)
    assert model.name.startswith("clip:") and len(names) == 8
    from fgvc.explain import gradcam  # on the last block's tokens, as for any ViT

    x = torch.rand(2, 3, 32, 32)
    maps = gradcam(model, x)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all() and maps.flatten(1).std(1).min() > 0
    assert main(["export", str(out), "--format", "hf"]) == 2 and "is a CLIP run" in capsys.readouterr().err


def test_a_resumed_clip_run_ends_where_an_uninterrupted_one_does(tiny_model_name, weights, tiny_synthbirds_root,
                                                                 tmp_path, monkeypatch):
    import fgvc.train.loop as loop

    kw = _kwargs(alphas=(), epochs=4)
    whole = run_finetune(tiny_model_name, str(weights), "synthbirds", tiny_synthbirds_root, tmp_path / "a", **kw)
    real, commits = loop.commit_epoch, []

    def killed_after_two(*args, **kwargs):  # the process dies right after epoch 2 is committed
        real(*args, **kwargs)
        commits.append(1)
        if len(commits) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "commit_epoch", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(tiny_model_name, str(weights), "synthbirds", tiny_synthbirds_root, tmp_path / "b", **kw)
    monkeypatch.setattr(loop, "commit_epoch", real)
    resumed = run_finetune(tiny_model_name, str(weights), "synthbirds", tiny_synthbirds_root, tmp_path / "b",
                           resume=True, **kw)
    for key in ("test_acc", "val_acc", "train_loss", "best_epoch", "epochs_run"):
        assert resumed[key] == whole[key], key
    a = runs.load_weights(tmp_path / "a" / "checkpoints" / "last.safetensors")
    b = runs.load_weights(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the cosine schedule resumed mid-way, step for step


def test_trainable_head_and_last_blocks_freeze_the_rest_of_the_tower(tiny_model_name, weights, tiny_synthbirds_root):
    cfg = finetune_config(tiny_model_name, str(weights), "synthbirds", tiny_synthbirds_root, download=False,
                          overrides=["model.trainable=head+blocks:1"])
    model = build_model(cfg, 4, ["a", "b", "c", "d"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "net.head.1.weight" in trainable and "net.visual.proj" in trainable and "net.visual.ln_post.weight" in trainable
    assert any(n.startswith("net.visual.transformer.resblocks.1.") for n in trainable)
    assert not any(n.startswith(("net.visual.transformer.resblocks.0.", "net.visual.conv1")) for n in trainable)


def test_a_wrong_image_size_names_the_one_the_tower_takes(tiny_model_name, weights, tiny_synthbirds_root):
    cfg = finetune_config(tiny_model_name, str(weights), "synthbirds", tiny_synthbirds_root, download=False,
                          overrides=["data.image_size=64"])
    with pytest.raises(UserError, match="takes 32x32 images.*data.image_size=32"):
        build_model(cfg, 4, ["a", "b", "c", "d"])


def test_openai_tags_rebuild_the_architecture_with_quick_gelu(tiny_model_name, monkeypatch):
    import open_clip

    def act(model):
        return {type(m).__name__ for m in model.modules() if "GELU" in type(m).__name__}

    assert act(clip_classifier(f"clip:{tiny_model_name}", 4, image_size=32)) == {"GELU"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda name, tag: {"quick_gelu": True} if tag == "openai" else {})
    assert act(clip_classifier(f"clip:{tiny_model_name}", 4, image_size=32, pretrained="openai")) == {"QuickGELU"}


def test_score_wise_ft_refuses_an_unfinished_run(clip_run, tmp_path):
    import shutil

    out, _ = clip_run
    copy = shutil.copytree(out, tmp_path / "copy")
    (copy / "metrics.json").unlink()
    with pytest.raises(UserError, match="has not finished training"):
        score_wise_ft(copy)


def test_clip_templates_and_descriptions_reach_the_zero_shot_head(tiny_model_name, weights, tiny_synthbirds_root,
                                                                  tmp_path):
    names = ["001.Red_Bird", "002.Blue_Bird", "003.Grey_Bird", "004.Green_Bird"]

    def head(*overrides):
        cfg = finetune_config(tiny_model_name, str(weights), "synthbirds", tiny_synthbirds_root, download=False,
                              overrides=list(overrides))
        return build_model(cfg, 4, names).head.weight

    seed = head()
    assert not torch.allclose(seed, head("clip.templates=a bird called {}."))
    descriptions = tmp_path / "d.json"
    descriptions.write_text(json.dumps({"Red Bird": ["a small red bird with a short beak"]}))
    with_text = head(f"clip.descriptions={descriptions}")
    assert not torch.allclose(with_text[0], seed[0]) and torch.allclose(with_text[1:], seed[1:])


def test_clip_wise_ft_alphas_choose_the_scored_points(clip_run, tmp_path):
    import shutil

    out, _ = clip_run
    copy = shutil.copytree(out, tmp_path / "copy")
    cfg = config.load(copy / "config.yaml", {"clip.wise_ft_alphas": [0.0, 1.0]})
    (copy / "config.yaml").write_text(config.dump(cfg))
    metrics = score_wise_ft(copy, progress=False)
    assert [r["alpha"] for r in metrics["wise_ft"]] == [0.0, 1.0]
    assert (copy / "wise_ft.csv").read_text().count("\n") == 3


def test_clip_pretrained_cache_dir_and_offline_reach_the_weights_loader(tiny_model_name, weights, tiny_synthbirds_root,
                                                                         tmp_path, monkeypatch):
    import fgvc.clip.models as clip_models

    calls, real = [], clip_models.load_clip

    def spied(name, pretrained, **kwargs):
        calls.append((name, pretrained, kwargs))
        return real(name, pretrained, **kwargs)

    monkeypatch.setattr(clip_models, "load_clip", spied)
    cfg = finetune_config(tiny_model_name, str(weights), "synthbirds", tiny_synthbirds_root,
                          weights_cache_dir=tmp_path / "cache", download=False)
    assert (cfg.clip.pretrained, cfg.clip.cache_dir, cfg.clip.offline) == (str(weights), str(tmp_path / "cache"), True)
    build_model(cfg, 4, ["a", "b", "c", "d"])
    assert calls == [(tiny_model_name, str(weights), {"cache_dir": str(tmp_path / "cache"), "download": False})]
