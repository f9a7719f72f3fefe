"""PMG (Du et al. 2020): the jigsaw, the stages it reads, one optimizer step per granularity, its inference."""

from __future__ import annotations

import pytest
import torch

from fgvc import config
from fgvc.errors import UserError
from fgvc.methods import build_method, train_loss
from fgvc.methods import pmg as pmg_module
from fgvc.methods.pmg import GRANULARITIES, jigsaw, stage_maps, tile_cycle
from fgvc.models import create_model
from fgvc.train import train
from fgvc.train.mixing import soft_cross_entropy, soft_targets


def tiles(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The n x n tiles of (B, C, H, W) images, row-major."""
    th, tw = x.shape[-2] // n, x.shape[-1] // n
    return [x[..., r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(n) for c in range(n)]


def tile_source(out: torch.Tensor, x: torch.Tensor, n: int) -> list[int]:
    """For each tile of ``out``, the index of the tile of ``x`` it equals (fails when there is none)."""
    sources = tiles(x, n)
    found = []
    for t in tiles(out, n):
        matches = [i for i, s in enumerate(sources) if torch.equal(s, t)]
        assert len(matches) == 1, "an output tile is not exactly one input tile"
        found.append(matches[0])
    return found


@pytest.mark.parametrize("n", [8, 4, 2])
def test_the_jigsaw_is_a_permutation_of_the_n_squared_tiles(n):
    x = torch.rand(2, 3, 32, 32)
    order = torch.randperm(n * n, generator=torch.Generator().manual_seed(n))
    out = jigsaw(x, n, order)
    source = tile_source(out, x, n)
    assert sorted(source) == list(range(n * n)) and source == order.tolist()
    assert source != list(range(n * n))  # it did move tiles


def test_pixels_past_the_last_whole_tile_stay_and_every_image_gets_the_same_permutation():
    x = torch.rand(3, 3, 19, 18)  # 19 // 4 = 4 rows of 4 px: row 16-18 is outside the puzzle
    out = jigsaw(x, 4, torch.randperm(16, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(out[..., 16:, :], x[..., 16:, :]) and torch.equal(out[..., :, 16:], x[..., :, 16:])
    per_image = [tile_source(out[i:i + 1, :, :16, :16], x[i:i + 1, :, :16, :16], 4) for i in range(3)]
    assert per_image[0] == per_image[1] == per_image[2]


def test_one_tile_and_the_identity_order_leave_the_images_as_they_are():
    x = torch.rand(2, 3, 20, 20)
    assert torch.equal(jigsaw(x, 1), x)
    assert torch.equal(jigsaw(x, 4, torch.arange(16)), x)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_the_default_tile_order_is_one_cycle_through_every_tile_as_the_authors_swaps_make(n):
    """The authors swap the top-left tile with every tile in shuffled order: one n*n-cycle, no tile in place
    (a plain random permutation leaves the whole image unchanged in 1 of 24 batches at n = 2)."""
    g = torch.Generator().manual_seed(0)
    orders = [tile_cycle(n, g) for _ in range(200)]
    for order in orders:
        seen, t = [], 0
        for _ in range(n * n):
            seen.append(t)
            t = int(order[t])
        assert t == 0 and sorted(seen) == list(range(n * n))  # back at the start after n*n steps, all visited
    if n == 2:  # the 3! = 6 four-cycles of 4 tiles, all drawn
        assert len({tuple(o.tolist()) for o in orders}) == 6
    x = torch.rand(1, 3, 32, 32)
    out = jigsaw(x, n, generator=torch.Generator().manual_seed(1))
    source = tile_source(out, x, n)
    assert all(s != t for t, s in enumerate(source))  # the default order moves every tile


def _hooked(net, names, x):
    out = {}
    handles = [net.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o)) for n in names]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return [out[n] for n in names]


@pytest.mark.parametrize(("name", "modules"), [("resnet18", ["layer2", "layer3", "layer4"]),
                                               ("test_resnet", ["layer2", "layer3", "layer4"]),
                                               ("tf_mobilenetv2_100", ["blocks.2", "blocks.4", "bn2"])])
def test_the_three_stages_are_the_backbones_last_three(name, modules):
    # torchvision ResNet: its layers; timm: the feature_info stages at strides 8 and 16, then the map the
    # plain head reads (MobileNetV2: conv_head + bn2, 1280 channels)
    net = create_model(name, 3).net.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        maps = stage_maps(net, "resnet" if name == "resnet18" else "timm", x)
        expected = _hooked(net, modules, x)
    assert [m.shape[-1] for m in maps] == [8, 4, 2]  # strides 8, 16, 32
    for got, want in zip(maps, expected, strict=True):
        assert torch.allclose(got, want)


def test_a_backbone_without_stages_is_one_sentence():
    with pytest.raises(UserError, match="no spatial feature map|does not list its stages"):
        build_method("pmg", create_model("test_vit", 3, image_size=32), 3)


def test_inference_is_the_sum_of_the_four_classifiers():
    torch.manual_seed(0)
    model = build_method("pmg", create_model("test_resnet", 5), 5, pmg_width=16).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        parts = model.logits(model.normalize(x))
        assert len(parts) == 4
        assert torch.allclose(model(x), parts[0] + parts[1] + parts[2] + parts[3], atol=1e-6)
        assert torch.allclose(model(x, part=3), parts[3], atol=1e-6)


# which parameters each step may move: the stem and stages up to the stage read, its conv block and classifier
STEM = ("net.conv1.", "net.bn1.", "net.layer1.")
REACH = {0: (*STEM, "net.layer2.", "net.fc.blocks.0.", "net.fc.classifiers.0."),
         1: (*STEM, "net.layer2.", "net.layer3.", "net.fc.blocks.1.", "net.fc.classifiers.1."),
         2: (*STEM, "net.layer2.", "net.layer3.", "net.layer4.", "net.fc.blocks.2.", "net.fc.classifiers.2."),
         3: (*STEM, "net.layer2.", "net.layer3.", "net.layer4.", "net.fc.blocks.", "net.fc.concat.")}


def test_each_granularitys_step_moves_only_what_its_classifier_reads():
    torch.manual_seed(0)
    model = build_method("pmg", create_model("test_resnet", 4), 4, pmg_width=16).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    names = [n for n, _ in model.named_parameters()]
    snapshots = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    fed = []

    def forward(x, part=None):
        fed.append((x.detach().clone(), part))
        return model(x, part=part)

    def step(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})

    x, target = torch.rand(4, 3, 64, 64), soft_targets(torch.tensor([0, 1, 2, 3]), 4)
    loss, logits = train_loss(model, forward, x, target, soft_cross_entropy, step=step)
    step(loss)  # the loop's own step: the concatenated classifier's
    assert [part for _, part in fed] == [0, 1, 2, 3]
    for (xk, _), n in zip(fed, GRANULARITIES, strict=False):  # steps 1-3 see puzzles of 8, 4, 2 tiles
        assert sorted(tile_source(xk, x, n)) == list(range(n * n)) and not torch.equal(xk, x)
    assert torch.equal(fed[3][0], x)  # step 4: the whole image
    for k in range(4):
        before, after = snapshots[k], snapshots[k + 1]
        moved = {n for n in names if not torch.equal(before[n], after[n])}
        assert moved, k
        assert all(n.startswith(REACH[k]) for n in moved), (k, sorted(moved - {n for n in moved
                                                                               if n.startswith(REACH[k])}))
        # the stage it trains does move
        assert any(n.startswith(REACH[k][-1]) for n in moved) and any(n.startswith(REACH[k][-2]) for n in moved)
    assert torch.allclose(loss, 2 * soft_cross_entropy(logits, target))  # step 4's doubled loss (authors' code)


@pytest.mark.parametrize("bad", [1, 2, 3])
def test_a_jigsaw_steps_non_finite_loss_becomes_the_batchs_loss(bad):
    # the loop checks the loss it gets back, step 4's: a nan or inf loss of step 1-3 must reach that check
    torch.manual_seed(0)
    model = build_method("pmg", create_model("test_resnet", 4), 4, pmg_width=8).train()
    calls, stepped = [], []

    def criterion(logits, target):  # step `bad` diverges: inf, as an overflowing loss (its gradient stays finite)
        calls.append(1)
        loss = soft_cross_entropy(logits, target)
        return loss + float("inf") if len(calls) == bad else loss

    x, target = torch.rand(4, 3, 32, 32), soft_targets(torch.tensor([0, 1, 2, 3]), 4)
    loss, logits = train_loss(model, model, x, target, criterion, step=lambda loss: stepped.append(loss.detach()))
    assert len(stepped) == 3 and torch.isinf(stepped[bad - 1])
    assert torch.isinf(loss) and torch.isfinite(logits).all()
    calls.clear()
    loss, logits = train_loss(model, model, x, target, soft_cross_entropy, step=lambda loss: None)
    assert torch.equal(loss, 2 * soft_cross_entropy(logits, target))  # finite steps: step 4's loss itself


def test_a_run_whose_jigsaw_loss_diverges_ends_in_the_loops_sentence(tiny_synthbirds_root, tmp_path, monkeypatch,
                                                                     capsys):
    from fgvc.cli import main
    from fgvc.train.losses import Criterion

    scored = Criterion.__call__
    calls = []

    def diverging(self, logits, target):  # every batch's step 1 (the 8 x 8 puzzle) overflows to inf
        calls.append(1)
        loss = scored(self, logits, target)
        return loss + float("inf") if len(calls) % 4 == 1 else loss

    monkeypatch.setattr(Criterion, "__call__", diverging)
    out = tmp_path / "runs"
    assert main(["train", "model.name=test_resnet", "data.image_size=32", "train.batch_size=8", "train.epochs=1",
                 "data.num_workers=0", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={out}",
                 "method.name=pmg", "method.pmg_width=8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the training loss became inf at epoch 1 step 1; lower train.lr" in err, err


def test_without_a_step_function_pmg_does_not_silently_take_one_step():
    model = build_method("pmg", create_model("test_resnet", 2), 2, pmg_width=8)
    with pytest.raises(NotImplementedError, match="one optimizer step per granularity"):
        train_loss(model, model, torch.rand(2, 3, 32, 32), torch.eye(2), soft_cross_entropy)


def test_the_loop_takes_four_optimizer_steps_per_batch(tiny_synthbirds_root, tmp_path, monkeypatch):
    from torch.optim.optimizer import register_optimizer_step_post_hook

    fed, steps = [], []
    real = pmg_module.Method.forward

    def forward(self, x, part=None):
        if self.training:
            fed.append(part)
        return real(self, x, part)

    monkeypatch.setattr(pmg_module.Method, "forward", forward)
    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=32", "train.batch_size=8", "train.epochs=1",
                             "train.patience=0", "data.num_workers=0", "train.precision=32-true",
                             "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}",
                             "method.name=pmg", "method.pmg_width=16"])
    handle = register_optimizer_step_post_hook(lambda *args: steps.append(1))
    try:
        train(cfg, progress=False)
    finally:
        handle.remove()
    batches = len(steps) // 4
    assert batches >= 2 and len(steps) == 4 * batches
    assert fed == [0, 1, 2, 3] * batches  # every batch: the three puzzles, then the whole image
