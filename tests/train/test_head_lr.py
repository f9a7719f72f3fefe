"""train.head_lr_scale: the head (a method's whole head, else the final linear layer) trains at k x train.lr."""

import csv
from types import SimpleNamespace

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from fgvc import config
from fgvc.api import build_model
from fgvc.train import train
from fgvc.train.optim import base_lr, build_optimizer, build_scheduler, head_parameters
from fgvc.train.state import set_optimizer

FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=8", "train.lr=1e-3",
        "train.patience=0", "data.num_workers=0", "train.precision=32-true", "data.name=synthbirds"]


def _cfg(*extra):
    return config.load(None, [*FAST, *extra])


def _groups(optimizer):
    return [(g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in optimizer.param_groups]


@pytest.mark.parametrize("method", ["plain", "isqrt_cov"])
def test_the_head_is_a_group_of_its_own_at_k_times_the_rate(method):
    settings = [f"method.name={method}", *(["method.isqrt_dim=8"] if method != "plain" else [])]
    cfg = _cfg(*settings, "train.head_lr_scale=10")
    model = build_model(cfg, 4)
    head = {id(p) for p in head_parameters(model)}
    # the whole method head (isqrt_cov: its 1x1 reduction, BatchNorm and classifier), else the linear layer
    expected = model.head_module if method != "plain" else model.head
    assert head == {id(p) for p in expected.parameters()} and len(head) < len(list(model.parameters()))
    (lr_b, _, backbone), (lr_h, _, heads) = _groups(build_optimizer(cfg, model))
    assert (lr_b, lr_h) == (pytest.approx(1e-3), pytest.approx(1e-2))
    assert heads == head and backbone == {id(p) for p in model.parameters()} - head
    # at scale 1 one group, as before the setting existed (old checkpoints' optimizer states still load)
    assert len(build_optimizer(_cfg(*settings), build_model(cfg, 4)).param_groups) == 1


def test_with_filter_bias_and_bn_each_part_splits_by_decay():
    cfg = _cfg("train.head_lr_scale=5", "train.filter_bias_and_bn=true", "train.weight_decay=0.1")
    model = build_model(cfg, 4)
    groups = _groups(build_optimizer(cfg, model))
    assert [(lr, wd) for lr, wd, _ in groups] == [(pytest.approx(1e-3), 0.1), (pytest.approx(1e-3), 0.0),
                                                  (pytest.approx(5e-3), 0.1), (pytest.approx(5e-3), 0.0)]
    assert groups[2][2] | groups[3][2] == {id(p) for p in head_parameters(model)}  # weight, bias


def test_the_first_adamw_step_moves_the_head_k_times_as_far():
    # AdamW's first step moves every weight by lr * g / (|g| + eps) (plus its decay): about lr for each
    torch.manual_seed(0)
    cfg = _cfg("train.head_lr_scale=10", "train.weight_decay=0")
    model = build_model(cfg, 4)
    optimizer = build_optimizer(cfg, model)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    torch.nn.functional.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    moved = {id(p): (p.detach() - before[id(p)]).abs().max().item() for p in model.parameters()}
    head = {id(p) for p in head_parameters(model)}
    assert max(v for k, v in moved.items() if k in head) == pytest.approx(1e-2, rel=1e-3)
    assert max(v for k, v in moved.items() if k not in head) == pytest.approx(1e-3, rel=1e-3)


def test_a_run_trains_its_head_at_k_times_every_scheduled_rate(tiny_synthbirds_root, tmp_path):
    seen = []
    hook = register_optimizer_step_pre_hook(lambda opt, *a: seen.append([g["lr"] for g in opt.param_groups]))
    try:
        cfg = _cfg("train.head_lr_scale=10", "train.epochs=2", "train.milestones=[1]", "train.gamma=0.5",
                   f"data.root={tiny_synthbirds_root}", f"out={tmp_path}")
        run_dir = train(cfg, progress=False)
    finally:
        hook.remove()
    per_epoch = len(seen) // 2
    assert seen == [pytest.approx([1e-3, 1e-2])] * per_epoch + [pytest.approx([5e-4, 5e-3])] * per_epoch
    with open(run_dir / "history.csv") as f:  # the logs keep train.lr's schedule, not the head's
        assert [float(r["lr"]) for r in csv.DictReader(f)] == pytest.approx([1e-3, 5e-4])


def test_a_resume_with_a_new_rate_keeps_the_heads_factor():
    cfg = _cfg("train.head_lr_scale=10", "train.milestones=[1]", "train.gamma=0.5")
    optimizer = build_optimizer(cfg, build_model(cfg, 4))
    scheduler, _ = build_scheduler(cfg, optimizer, steps_per_epoch=3)
    optimizer.step()  # no gradients yet: moves nothing
    scheduler.step()  # past the milestone
    set_optimizer(optimizer, scheduler, SimpleNamespace(**{**vars(cfg.train), "lr": 2e-3}))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-2])  # 2e-3 x 0.5, x 10
    assert scheduler.base_lrs == pytest.approx([2e-3, 2e-2]) and base_lr(optimizer) == pytest.approx(1e-3)


def test_a_run_that_trains_only_its_head_still_logs_train_lr(tiny_synthbirds_root, tmp_path):
    # the head's group is the only one, so the first group's rate is k x train.lr: the logs divide it out
    seen = []
    hook = register_optimizer_step_pre_hook(lambda opt, *a: seen.append([g["lr"] for g in opt.param_groups]))
    try:
        cfg = _cfg("train.head_lr_scale=10", "model.trainable=fc", "train.epochs=1",
                   f"data.root={tiny_synthbirds_root}", f"out={tmp_path}")
        run_dir = train(cfg, progress=False)
    finally:
        hook.remove()
    assert seen and all(lrs == pytest.approx([1e-2]) for lrs in seen)
    with open(run_dir / "history.csv") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)] == pytest.approx([1e-3])
