import json

import torch
from tinyclip import make_tiny_clip

from fgvc.clip.finetune import wise_ft
from fgvc.clip.probe import run_linear_probe
from fgvc.models.linear_probe import fit_linear_probe, probe_accuracy


def test_wise_ft_interpolates_every_float_weight():
    zs = {"w": torch.zeros(3), "b": torch.ones(2), "steps": torch.tensor(5)}
    ft = {"w": torch.full((3,), 4.0), "b": torch.full((2,), 3.0), "steps": torch.tensor(9)}
    assert torch.equal(wise_ft(zs, ft, 0.0)["w"], zs["w"])
    assert torch.equal(wise_ft(zs, ft, 1.0)["b"], ft["b"])
    mid = wise_ft(zs, ft, 0.25)
    assert torch.allclose(mid["w"], torch.full((3,), 1.0)) and torch.allclose(mid["b"], torch.full((2,), 1.5))
    assert mid["steps"] == 9  # integer buffers are not interpolated


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
