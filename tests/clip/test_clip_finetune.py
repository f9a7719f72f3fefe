import json

import pytest
import torch
from tinyclip import make_tiny_clip
from torch.utils.data import DataLoader

from fgvc.clip.finetune import evaluate_classifier, finetune_clip, run_finetune, wise_ft, wise_ft_curve
from fgvc.clip.models import clip_transform
from fgvc.clip.probe import fit_linear_probe, probe_accuracy, run_linear_probe
from fgvc.clip.prompts import prompt_names
from fgvc.clip.zeroshot import zeroshot_weights

NAMES = prompt_names(["001.Red_Square", "002.Green_Circle", "003.Blue_Triangle", "004.Yellow_Cross"])


def test_finetuning_a_tiny_clip_beats_its_own_zero_shot_accuracy(tiny_clip, tokenizer, shapes):
    torch.manual_seed(0)
    transform = clip_transform(tiny_clip)
    train = DataLoader(shapes(16, seed=1, transform=transform), batch_size=16, shuffle=True)
    val = DataLoader(shapes(4, seed=2, transform=transform), batch_size=64)
    test = DataLoader(shapes(8, seed=3, transform=transform), batch_size=64)
    result = finetune_clip(tiny_clip, tokenizer, NAMES, ["a photo of a {}."], train, val,
                           epochs=6, lr=1e-3, weight_decay=0.01, progress=False)
    model = result.model
    finetuned = evaluate_classifier(model, test)["acc"]
    model.load_state_dict(result.zeroshot_state)
    zeroshot = evaluate_classifier(model, test)["acc"]
    print(f"zero-shot {zeroshot:.3f} -> fine-tuned {finetuned:.3f}")
    assert finetuned >= 0.75 and finetuned >= zeroshot + 0.25, (zeroshot, finetuned)
    assert 1 <= result.best_epoch <= 6 and len(result.history) == 6
    assert result.history[result.best_epoch - 1]["val_acc"] == max(r["val_acc"] for r in result.history)


def test_the_head_starts_as_the_scaled_zero_shot_weights(tiny_clip, tokenizer, shapes):
    loader = DataLoader(shapes(1, seed=1, transform=clip_transform(tiny_clip)), batch_size=4)
    expected = zeroshot_weights(tiny_clip, tokenizer, NAMES, ["a photo of a {}."]) * tiny_clip.logit_scale.exp()
    result = finetune_clip(tiny_clip, tokenizer, NAMES, ["a photo of a {}."], loader, epochs=0, progress=False)
    assert torch.allclose(result.zeroshot_state["head.weight"], expected.detach(), atol=1e-5)


def test_wise_ft_interpolates_every_float_weight():
    zs = {"w": torch.zeros(3), "b": torch.ones(2), "steps": torch.tensor(5)}
    ft = {"w": torch.full((3,), 4.0), "b": torch.full((2,), 3.0), "steps": torch.tensor(9)}
    assert torch.equal(wise_ft(zs, ft, 0.0)["w"], zs["w"])
    assert torch.equal(wise_ft(zs, ft, 1.0)["b"], ft["b"])
    mid = wise_ft(zs, ft, 0.25)
    assert torch.allclose(mid["w"], torch.full((3,), 1.0)) and torch.allclose(mid["b"], torch.full((2,), 1.5))
    assert mid["steps"] == 9  # integer buffers are not interpolated


def test_wise_ft_curve_ends_at_zero_shot_and_fine_tuned_accuracy():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(60, 4), torch.randint(0, 3, (60,))
    loader = DataLoader(list(zip(x, y)), batch_size=16)
    zs = {k: v.clone() for k, v in model.state_dict().items()}
    ft = {k: v + torch.randn_like(v) for k, v in zs.items()}
    curve = wise_ft_curve(model, zs, ft, loader, alphas=(0.0, 0.5, 1.0))
    assert [r["alpha"] for r in curve] == [0.0, 0.5, 1.0]
    assert torch.equal(model.weight, ft["weight"])  # left with the fine-tuned weights
    assert curve[2]["acc"] == evaluate_classifier(model, loader)["acc"]
    model.load_state_dict(zs)
    assert curve[0]["acc"] == evaluate_classifier(model, loader)["acc"]


def test_linear_probe_picks_the_decay_that_is_best_on_validation():
    g = torch.Generator().manual_seed(0)

    def sample(n):
        # the class is in x0 - x1 only; a strongly decayed probe follows the class means (x0) and fails
        y = torch.randint(0, 2, (n,), generator=g)
        noise = 3.0 * torch.randn(n, generator=g)
        x = torch.stack([(2 * y - 1) + noise, noise], 1) + 0.05 * torch.randn(n, 2, generator=g)
        return x + 5.0, y  # an offset, so the probe must standardise and fold it back

    (tx, ty), (vx, vy), (sx, sy) = sample(400), sample(200), sample(200)
    probe = fit_linear_probe(tx, ty, vx, vy, num_classes=2, weight_decays=(1e-4, 10.0, 1e-2))
    assert [r["weight_decay"] for r in probe["sweep"]] == [10.0, 1e-2, 1e-4]  # strong to weak
    assert probe["sweep"][0]["val_acc"] < 0.8  # decay 10 underfits
    assert probe["val_acc"] == max(r["val_acc"] for r in probe["sweep"]) > 0.95
    assert probe["weight_decay"] < 10.0
    assert probe_accuracy(probe, sx, sy)["acc"] > 0.95  # on raw features: standardisation folded in


def test_run_finetune_writes_metrics_history_and_wise_ft_curve(tmp_path, tiny_model_name, shapes_registered):
    weights = tmp_path / "tiny.pt"
    torch.save(make_tiny_clip(seed=1).state_dict(), weights)
    metrics = run_finetune(tiny_model_name, str(weights), shapes_registered, tmp_path, tmp_path / "run",
                           epochs=3, batch_size=16, lr=1e-3, weight_decay=0.01, device="cpu", num_workers=0,
                           progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("train_acc", "val_acc", "test_acc", "test_top5", "train_loss", "val_loss", "best_epoch",
                "epochs_run", "seconds", "train_images_per_second", "params_total", "params_trainable"):
        assert key in saved, key
    assert [r["alpha"] for r in saved["wise_ft"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert saved["wise_ft"][-1]["test_acc"] == pytest.approx(metrics["test_acc"])
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 4
    assert (tmp_path / "run" / "checkpoints" / "clip_finetuned.safetensors").is_file()


def test_run_linear_probe_reports_probe_and_zero_shot_from_cached_features(tmp_path, tiny_model_name,
                                                                           shapes_registered):
    weights = tmp_path / "tiny.pt"
    torch.save(make_tiny_clip(seed=2).state_dict(), weights)
    common = dict(device="cpu", num_workers=0, cache_dir=tmp_path / "cache", progress=False)
    metrics = run_linear_probe(tiny_model_name, str(weights), shapes_registered, tmp_path, tmp_path / "run",
                               **common)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test_acc"] == metrics["test_acc"] and saved["n_train"] == 64 and saved["n_test"] == 32
    # colour separates these classes even in a random tower's features: the probe must find it
    assert saved["test_acc"] > saved["zeroshot_test_acc"] and saved["test_acc"] >= 0.75
    assert len(list((tmp_path / "cache" / "clip-embeddings").iterdir())) == 3  # train, val, test
    assert (tmp_path / "run" / "checkpoints" / "linear_probe.safetensors").is_file()


def test_history_lr_is_the_rate_of_the_epochs_last_step(tiny_clip, tokenizer, shapes):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    transform = clip_transform(tiny_clip)
    train = DataLoader(shapes(16, seed=1, transform=transform), batch_size=8)
    used = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    try:
        result = finetune_clip(tiny_clip, tokenizer, NAMES, ["a photo of a {}."], train, None, epochs=2, lr=1e-3,
                               progress=False)
    finally:
        handle.remove()
    steps = len(used) // 2
    assert [r["lr"] for r in result.history] == [used[steps - 1], used[-1]]
