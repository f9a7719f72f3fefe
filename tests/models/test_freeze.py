import pytest
import torch

from fgvc.errors import UserError
from fgvc.models import apply_trainable, count_parameters, create_model, train_mode


def _steps(model, steps=3, size=32, classes=4):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        train_mode(model)
        x = torch.rand(8, 3, size, size, generator=g)
        y = torch.randint(classes, (8,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("spec, frozen, trained", [
    ("fc", ("net.conv1", "net.layer1", "net.layer4"), ("net.fc",)),
    ("layer4+fc", ("net.conv1", "net.bn1", "net.layer3"), ("net.layer4", "net.fc")),
    ("layer2+layer3+layer4+fc", ("net.conv1", "net.layer1"), ("net.layer2", "net.layer4")),
])
def test_frozen_layers_and_their_bn_statistics_do_not_move(spec, frozen, trained):
    torch.manual_seed(0)
    model = create_model("resnet18", 4)
    apply_trainable(model, spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _steps(model)
    after = model.state_dict()
    for k in before:
        if k.startswith(frozen):
            assert torch.equal(before[k], after[k]), k  # weights and running stats alike
    moved = [k for k in before if k.startswith(trained) and k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert moved


def test_all_trains_bn_statistics_too():
    torch.manual_seed(0)
    model = create_model("resnet18", 4)
    apply_trainable(model, "all")
    before = model.net.bn1.running_mean.clone()
    _steps(model, steps=1)
    assert not torch.equal(before, model.net.bn1.running_mean)


def test_trainable_counts_match_hand_counts_for_resnet18():
    model = create_model("resnet18", 10)
    apply_trainable(model, "fc")
    assert count_parameters(model)["params_trainable"] == 512 * 10 + 10
    apply_trainable(model, "layer4+fc")
    layer4 = sum(p.numel() for p in model.net.layer4.parameters())
    assert layer4 == 8_393_728  # two BasicBlocks of 512 channels with a 1x1 downsample
    assert count_parameters(model)["params_trainable"] == layer4 + 5130


def test_vit_head_plus_last_blocks():
    model = create_model("test_vit", 5, image_size=32)
    blocks = list(model.net.blocks)
    apply_trainable(model, "head")
    head = 5 * model.head.in_features + 5
    assert count_parameters(model)["params_trainable"] == head
    apply_trainable(model, "head+blocks:1")
    expected = head + sum(p.numel() for p in blocks[-1].parameters()) + sum(p.numel() for p in model.net.norm.parameters())
    assert count_parameters(model)["params_trainable"] == expected
    assert not any(p.requires_grad for p in blocks[0].parameters())


def test_torchvision_vit_blocks_spec():
    model = create_model("vit_b_16", 3, image_size=32)
    apply_trainable(model, "head+blocks:6")
    layers = model.net.encoder.layers
    assert all(p.requires_grad for p in layers[6].parameters())
    assert not any(p.requires_grad for p in layers[5].parameters())
    assert not model.net.conv_proj.weight.requires_grad


@pytest.mark.parametrize("name, spec", [("resnet18", "layer5+fc"), ("test_vit", "head+blocks:99"),
                                        ("test_vit", "layer4+fc"), ("test_convnext", "head+blocks:2")])
def test_bad_trainable_spec_is_a_clear_error(name, spec):
    with pytest.raises(UserError, match="model.trainable"):
        apply_trainable(create_model(name, 3, image_size=32), spec)
