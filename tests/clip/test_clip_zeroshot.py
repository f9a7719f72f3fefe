import csv
import json

import pytest
import torch
import torch.nn.functional as F
from tinyclip import make_tiny_clip
from torch.utils.data import DataLoader

import fgvc.clip.zeroshot as zs
from fgvc.clip.models import ClipImageEncoder, clip_transform
from fgvc.clip.zeroshot import encode_images, evaluate, run_zeroshot, zeroshot_weights


def test_zeroshot_weights_are_the_normalised_mean_of_normalised_prompt_embeddings(tiny_clip, tokenizer):
    names, templates = ["Laysan Albatross", "Chihuahua", "golden retriever"], ["a photo of a {}.", "art of the {}."]
    weights = zeroshot_weights(tiny_clip, tokenizer, names, templates)
    with torch.no_grad():
        expected = torch.stack([
            F.normalize(F.normalize(tiny_clip.encode_text(tokenizer([t.format(n) for t in templates])), dim=-1)
                        .mean(0), dim=0)
            for n in names
        ])
    assert weights.shape == (3, 32)
    assert torch.allclose(weights, expected, atol=1e-5)
    assert torch.allclose(weights.norm(dim=1), torch.ones(3), atol=1e-5)


def test_descriptions_are_averaged_with_the_templated_prompts(tiny_clip, tokenizer):
    weights = zeroshot_weights(tiny_clip, tokenizer, ["Crow", "Gull"], ["a photo of a {}."],
                               descriptions=[["a black {}", "a loud bird"], []])
    with torch.no_grad():
        crow = F.normalize(tiny_clip.encode_text(tokenizer(["a photo of a Crow.", "a black Crow", "a loud bird"])), dim=-1)
        gull = F.normalize(tiny_clip.encode_text(tokenizer(["a photo of a Gull."])), dim=-1)
    assert torch.allclose(weights[0], F.normalize(crow.mean(0), dim=0), atol=1e-5)
    assert torch.allclose(weights[1], gull[0], atol=1e-5)


def test_evaluate_on_embeddings_with_a_known_answer():
    names = [f"c{i}" for i in range(6)]
    weights = torch.eye(6)  # class c's weight is axis c, so an image's logits are its coordinates
    # (true label, coordinates): ranks are set by hand
    rows = [
        (0, [9, 1, 0, 0, 0, 0]),  # right
        (0, [1, 9, 0, 0, 0, 0]),  # 0 -> 1, in top 5
        (1, [0, 9, 0, 0, 0, 0]),  # right
        (2, [0, 5, 4, 0, 0, 0]),  # 2 -> 1
        (2, [0, 0, 9, 0, 0, 0]),  # right
        (3, [6, 5, 4, 3, 2, -9]),  # 3 -> 0, rank 4: in top 5
        (5, [6, 5, 4, 3, 2, -9]),  # 5 -> 0, rank 6: outside top 5
        (0, [1, 9, 0, 0, 0, 0]),  # 0 -> 1 again
    ]
    labels = torch.tensor([r[0] for r in rows])
    emb = torch.tensor([r[1] for r in rows], dtype=torch.float) * 0.1 + 1e-3  # scale must not matter
    result = evaluate(emb, labels, weights, names)
    assert result["top1"] == pytest.approx(3 / 8)
    assert result["top5"] == pytest.approx(7 / 8)
    assert result["per_class_acc"] == {"c0": pytest.approx(1 / 3), "c1": 1.0, "c2": 0.5, "c3": 0.0, "c4": None,
                                       "c5": 0.0}
    assert result["mean_class_acc"] == pytest.approx((1 / 3 + 1 + 0.5 + 0 + 0) / 5)  # c4 has no images
    top = result["top_confusions"][0]
    assert (top["true"], top["predicted"], top["count"], top["rate"]) == ("c0", "c1", 2, pytest.approx(2 / 3))
    assert {(c["true"], c["predicted"]) for c in result["confusions"]} == {
        ("c0", "c1"), ("c2", "c1"), ("c3", "c0"), ("c5", "c0")}


def count_encoder_calls(model) -> list:
    calls = []
    model.visual.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_cached_embeddings_are_reused_without_running_the_encoder(tmp_path, tiny_clip, shapes):
    loader = DataLoader(shapes(3, seed=0, transform=clip_transform(tiny_clip)), batch_size=5)
    calls = count_encoder_calls(tiny_clip)
    cache = tmp_path / "emb.safetensors"
    first, labels = encode_images(tiny_clip, loader, cache_path=cache, progress=False)
    assert len(calls) == 3 and cache.is_file()  # 12 images in batches of 5
    assert torch.allclose(first.norm(dim=1), torch.ones(12), atol=1e-5)

    second, labels2 = encode_images(tiny_clip, loader, cache_path=cache, progress=False)
    assert len(calls) == 3  # nothing re-encoded
    assert torch.equal(first, second) and torch.equal(labels, labels2)

    bigger = DataLoader(shapes(4, seed=0, transform=clip_transform(tiny_clip)), batch_size=16)
    third, _ = encode_images(tiny_clip, bigger, cache_path=cache, progress=False)
    assert len(calls) == 4 and len(third) == 16  # a cache for another dataset size is stale


def test_run_zeroshot_writes_a_run_directory_and_reuses_embeddings(tmp_path, tiny_model_name, shapes_registered,
                                                                   monkeypatch):
    weights_file = tmp_path / "tiny.pt"
    torch.save(make_tiny_clip(seed=7).state_dict(), weights_file)
    common = dict(model_name=tiny_model_name, pretrained=str(weights_file), dataset_name=shapes_registered,
                  root=tmp_path, device="cpu", num_workers=0, cache_dir=tmp_path / "cache", progress=False)
    metrics = run_zeroshot(out_dir=tmp_path / "run1", templates="seed", batch_size=7, **common)

    saved = json.loads((tmp_path / "run1" / "metrics.json").read_text())
    assert saved["test_acc"] == metrics["test_acc"] and 0.0 <= saved["test_acc"] <= 1.0
    assert set(saved["per_class_acc"]) == {"001.Red_Square", "002.Green_Circle", "003.Blue_Triangle",
                                          "004.Yellow_Cross"}
    assert saved["test_top5"] == 1.0  # 4 classes: the true class is always among the top 5
    assert saved["n_images"] == 32 and saved["embeddings_cached"] is False
    with open(tmp_path / "run1" / "confusions.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["count"]) for r in rows) == round((1 - saved["test_acc"]) * 32)

    # the same accuracy computed the direct way: a classifier from the same weights on the same images
    from fgvc.clip.models import load_clip
    from fgvc.data import build_dataset
    model, preprocess, tokenizer = load_clip(tiny_model_name, str(weights_file))
    data = build_dataset(shapes_registered, tmp_path, "test", preprocess)
    head = zeroshot_weights(model, tokenizer, ["Red Square", "Green Circle", "Blue Triangle", "Yellow Cross"],
                            ["a photo of a {}."])
    x, y = next(iter(DataLoader(data, batch_size=64)))
    with torch.no_grad():
        direct = float(((ClipImageEncoder(model)(x) @ head.T).argmax(1) == y).float().mean())
    assert saved["test_acc"] == pytest.approx(direct)

    def must_not_encode(*args, **kwargs):
        raise AssertionError("images were re-encoded although their embeddings are cached")

    monkeypatch.setattr(zs, "encode_images", must_not_encode)
    again = run_zeroshot(out_dir=tmp_path / "run2", templates="ensemble", **common)
    assert again["embeddings_cached"] is True and again["templates"] != saved["templates"]


def test_run_zeroshot_on_generated_synthbirds_caches_per_split(tmp_path, tiny_model_name):
    from fgvc.data import synthetic

    root = synthetic.generate(tmp_path / "synthbirds", classes=3, per_class=6, size=32, seed=0)
    weights_file = tmp_path / "tiny.pt"
    torch.save(make_tiny_clip(seed=8).state_dict(), weights_file)
    common = dict(model_name=tiny_model_name, pretrained=str(weights_file), dataset_name="synthbirds", root=root,
                  device="cpu", num_workers=0, cache_dir=tmp_path / "cache", progress=False)
    test = run_zeroshot(out_dir=tmp_path / "test", split="test", **common)
    val = run_zeroshot(out_dir=tmp_path / "val", split="val", **common)
    assert "test_acc" in test and "val_acc" in val and not val["embeddings_cached"]
    assert test["n_images"] == 9 and len(test["per_class_acc"]) == 3
    cached = sorted(p.name for p in (tmp_path / "cache" / "clip-embeddings").iterdir())
    assert len(cached) == 2 and "__synthbirds__test__32px__" in cached[0]
    assert run_zeroshot(out_dir=tmp_path / "again", split="test", templates="birds", **common)["embeddings_cached"]
