"""train.schedule, train.warmup and train.filter_bias_and_bn reach the optimizer steps of a real run."""

import csv
import math

import pytest
from torch.optim.optimizer import register_optimizer_step_pre_hook

from fgvc import config
from fgvc.errors import UserError
from fgvc.models import create_model
from fgvc.train import train
from fgvc.train.optim import build_optimizer, cosine_factor

FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=8", "train.lr=1e-3",
        "train.patience=0", "data.num_workers=0", "train.precision=32-true", "data.name=synthbirds"]


def _run(root, tmp_path, *extra):
    """(run directory, [(lr, weight decays of the groups)] of every optimizer step, in order)."""
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append((opt.param_groups[0]["lr"], [g["weight_decay"] for g in opt.param_groups])))
    try:
        cfg = config.load(None, [*FAST, f"data.root={root}", f"out={tmp_path}", *extra])
        run_dir = train(cfg, progress=False)
    finally:
        handle.remove()
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    return run_dir, seen, history


def test_cosine_schedule_warms_up_then_follows_half_a_cosine_step_by_step(tiny_synthbirds_root, tmp_path):
    _, seen, history = _run(tiny_synthbirds_root, tmp_path, "train.epochs=3", "train.schedule=cosine",
                            "train.warmup=0.25")
    total = len(seen)
    warmup = int(0.25 * total)
    assert total >= 9 and warmup >= 2
    expected = [1e-3 * cosine_factor(s, total, warmup) for s in range(total)]
    assert [lr for lr, _ in seen] == pytest.approx(expected, rel=1e-9)
    assert seen[0][0] == pytest.approx(1e-3 / warmup) and max(lr for lr, _ in seen) == pytest.approx(1e-3)
    per_epoch = total // 3  # history's lr is the rate of each epoch's last step
    assert [float(r["lr"]) for r in history] == pytest.approx([seen[per_epoch * e - 1][0] for e in (1, 2, 3)])


def test_cosine_factor_is_the_closed_form():
    assert cosine_factor(0, 100, 10) == pytest.approx(0.1) and cosine_factor(9, 100, 10) == pytest.approx(1.0)
    assert cosine_factor(10, 100, 10) == pytest.approx(1.0)
    assert cosine_factor(55, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine_factor(99, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))


def test_multistep_schedule_keeps_the_rate_within_an_epoch(tiny_synthbirds_root, tmp_path):
    _, seen, history = _run(tiny_synthbirds_root, tmp_path, "train.epochs=3", "train.milestones=[1,2]",
                            "train.gamma=0.5")
    per_epoch = len(seen) // 3
    assert [lr for lr, _ in seen] == pytest.approx([1e-3] * per_epoch + [5e-4] * per_epoch + [2.5e-4] * per_epoch)
    assert [float(r["lr"]) for r in history] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_filter_bias_and_bn_takes_decay_off_one_dimensional_parameters(tiny_synthbirds_root, tmp_path):
    _, plain, _ = _run(tiny_synthbirds_root, tmp_path / "a", "train.epochs=1", "train.weight_decay=0.05")
    _, filtered, _ = _run(tiny_synthbirds_root, tmp_path / "b", "train.epochs=1", "train.weight_decay=0.05",
                          "train.filter_bias_and_bn=true")
    assert plain[0][1] == [0.05] and filtered[0][1] == [0.05, 0.0]
    cfg = config.load(None, ["train.filter_bias_and_bn=true", "train.weight_decay=0.05"])
    model = create_model("test_resnet", 3, image_size=32)
    groups = build_optimizer(cfg, model).param_groups
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_warmup_without_the_cosine_schedule_is_refused_before_anything_runs(tiny_synthbirds_root, tmp_path):
    cfg = config.load(None, [*FAST, f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", "train.warmup=0.1"])
    with pytest.raises(UserError, match="train.schedule=cosine"):
        train(cfg, progress=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="train.schedule"):
        config.load(None, ["train.schedule=linear"])
