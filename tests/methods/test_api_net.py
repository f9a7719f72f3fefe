"""API-Net (Zhuang et al. 2020): pair mining, gates, the gated logits, the ranking loss, inference, its batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fgvc import config
from fgvc.errors import UserError
from fgvc.methods import api_net, build_method, train_loss
from fgvc.methods.api_net import mine_pairs, rank_loss
from fgvc.models import create_model
from fgvc.train import train
from fgvc.train.mixing import soft_cross_entropy, soft_targets


def test_pairs_are_each_images_nearest_classmate_and_nearest_other_class_image():
    # points on a line: class 0 at 0, 1, 5; class 1 at 2, 10
    features = torch.tensor([[0.0], [1.0], [5.0], [2.0], [10.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    intra, inter = mine_pairs(features, labels)
    assert intra.tolist() == [1, 0, 1, 4, 3]
    assert inter.tolist() == [3, 3, 3, 1, 2]


def test_an_image_without_a_classmate_or_another_class_gets_no_partner():
    intra, inter = mine_pairs(torch.rand(3, 4), torch.tensor([0, 0, 1]))
    assert intra[2] == -1 and (intra[:2] >= 0).all() and (inter >= 0).all()
    _, inter = mine_pairs(torch.rand(2, 4), torch.tensor([1, 1]))
    assert inter.tolist() == [-1, -1]


def test_a_tie_goes_to_the_first_index():
    # class 0 at 0, 1, -1 (image 0's two classmates tie); class 1 at 3, -3 (image 0's two others tie)
    intra, inter = mine_pairs(torch.tensor([[0.0], [1.0], [-1.0], [3.0], [-3.0]]), torch.tensor([0, 0, 0, 1, 1]))
    assert intra[0] == 1 and inter[0] == 3


def test_pair_mining_reduces_each_distance_matrix_once_and_copies_nothing_from_the_host():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    features, labels = torch.rand(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with Ops() as ops:
        mine_pairs(features, labels)
    # min over a row gives the distance and its index; torch.tensor(inf, device=...) would be a host copy
    assert ops.names.count("min.dim") == 2 and not {"argmin.default", "lift_fresh.default"} & set(ops.names)


def test_gates_lie_in_0_1():
    head = api_net.APIHead(channels=6, num_classes=3, dropout=0.0, hidden=5)
    x1, x2 = torch.randn(8, 6), torch.randn(8, 6)
    for g in head.gates(x1, x2):
        assert g.shape == (8, 6) and (g > 0).all() and (g < 1).all()


def test_the_ranking_loss_is_its_closed_form():
    self_scores, other_scores = torch.tensor([0.9, 0.3, 0.5]), torch.tensor([0.5, 0.4, 0.48])
    # max(0, other - self + 0.05): 0, 0.15, 0.03
    assert rank_loss(self_scores, other_scores, 0.05).item() == pytest.approx((0 + 0.15 + 0.03) / 3)
    assert rank_loss(self_scores, other_scores, 0.0).item() == pytest.approx(0.1 / 3)


def _model(margin=0.05):
    torch.manual_seed(0)
    return build_method("api_net", create_model("test_resnet", 3), 3, api_hidden=7, api_margin=margin)


def test_the_training_loss_is_the_papers_from_pairs_gates_and_logits():
    model = _model(margin=0.2).eval()  # eval: BatchNorm and dropout out of the way of the hand computation
    with torch.no_grad():  # weights large enough that the two gates of a pair, and so their logits, differ
        model.head_module.map2.weight.mul_(200)
        model.head_module.fc.weight.mul_(100)
    x, labels = torch.rand(6, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2])
    target = soft_targets(labels, 3, 0.1)  # label smoothing reaches the cross-entropy
    loss, logits = train_loss(model, model, x, target, soft_cross_entropy)
    head = model.head_module
    with torch.no_grad():
        pooled = model.features(model.normalize(x)).mean((2, 3))
        intra, inter = mine_pairs(pooled, labels)
        a = torch.arange(6)
        first, second = torch.cat([a, a]), torch.cat([intra, inter])
        x1, x2 = pooled[first], pooled[second]
        mutual = head.map2(head.map1(torch.cat([x1, x2], 1)))  # Eq. 1 (no activation between, the authors')
        g1, g2 = torch.sigmoid(mutual * x1), torch.sigmoid(mutual * x2)  # Eq. 2
        fc = head.fc
        self1, self2 = fc(x1 + x1 * g1), fc(x2 + x2 * g2)  # Eq. 3: own gate
        other1, other2 = fc(x1 + x1 * g2), fc(x2 + x2 * g1)  # the partner's gate
        ce = soft_cross_entropy(torch.cat([self1, self2, other1, other2]),
                                torch.cat([target[first], target[second], target[first], target[second]]))
        own = torch.cat([labels[first], labels[second]])

        def p(z):
            return F.softmax(z, 1).gather(1, own.view(-1, 1)).view(-1)

        ranking = torch.clamp(p(torch.cat([other1, other2])) - p(torch.cat([self1, self2])) + 0.2, min=0).mean()
    assert loss.item() == pytest.approx((ce + ranking).item(), rel=1e-5)
    assert ranking > 0  # the margin term is live in this check
    assert (self1 - other1).abs().max() > 0.1  # and the own and partner's gates differ: a swap would show
    assert torch.allclose(logits, fc(pooled), atol=1e-6)  # train accuracy reads the plain path


def test_eval_logits_equal_the_plain_path():
    torch.manual_seed(0)
    backbone = create_model("test_resnet", 3)
    plain = create_model("test_resnet", 3)
    model = build_method("api_net", backbone, 3)
    # the backbone's weights and the classifier's, renamed to the plain head's slot; the MLP stays behind
    plain.load_state_dict({k.replace("net.fc.fc.", "net.fc."): v for k, v in model.state_dict().items()
                           if not k.startswith("net.fc.map")})
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), plain.eval()(x), atol=1e-6)


def test_cam_explains_api_net_as_the_plain_model_it_infers_with():
    # API-Net's inference is global average pooling + its linear layer, so CAM applies, and gives the plain
    # model's maps for the same backbone and classifier
    from fgvc.explain import cam

    torch.manual_seed(0)
    model = build_method("api_net", create_model("test_resnet", 3), 3).eval()
    plain = create_model("test_resnet", 3).eval()
    plain.load_state_dict({k.replace("net.fc.fc.", "net.fc."): v for k, v in model.state_dict().items()
                           if not k.startswith("net.fc.map")})
    x = torch.rand(4, 3, 64, 64)
    maps = cam(model, x, target=1)
    assert torch.allclose(maps, cam(plain, x, target=1), atol=1e-5) and maps.flatten(1).amax(1).gt(0).all()


BASE = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=8", "train.epochs=1", "train.patience=0",
        "data.num_workers=0", "train.precision=32-true", "data.name=synthbirds", "method.name=api_net",
        "method.api_hidden=8"]


@pytest.mark.parametrize(("extra", "words"), [
    ([], "needs batches of P >= 2 classes x K >= 2 images: set data.sampler=pk .*now data.sampler=random"),
    (["data.sampler=pk", "data.pk_images=1"], "now data.pk_images=1"),
    (["data.sampler=pk", "data.pk_images=4", "train.batch_size=4"], "now data.pk_images=4 and train.batch_size=4"),
    (["data.sampler=pk", "aug.mixup_alpha=0.2"], "cannot train with aug.mixup_alpha"),
    (["data.sampler=pk", "data.pk_classes=1"], r"now data.pk_classes=1 \(set it to 0 or 2 or more\)"),
    (["data.sampler=pk", "adv.attack=fgsm"], r"cannot train adversarially \(the adversarial loss would train only its "
                                             "plain path"),
])
def test_api_net_without_p_x_k_batches_is_refused_in_one_sentence(tiny_synthbirds_root, tmp_path, extra, words):
    cfg = config.load(None, [*BASE, f"data.root={tiny_synthbirds_root}", f"out={tmp_path / 'out'}", *extra])
    with pytest.raises(UserError, match=words):
        train(cfg, progress=False)
    assert not (tmp_path / "out").exists()


def test_the_loop_trains_api_net_on_p_x_k_batches(tiny_synthbirds_root, tmp_path, monkeypatch):
    seen = []
    real = api_net.Method.train_loss

    def spy(self, x, target, criterion, forward):
        loss, logits = real(self, x, target, criterion, forward)
        seen.append((target.argmax(1), loss.detach()))
        return loss, logits

    monkeypatch.setattr(api_net.Method, "train_loss", spy)
    cfg = config.load(None, [*BASE, f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", "data.sampler=pk",
                             "data.pk_images=2"])
    train(cfg, progress=False)
    assert len(seen) >= 2
    for labels, loss in seen:  # the method's step ran on every batch, each of 4 classes x 2 images
        assert sorted(torch.bincount(labels, minlength=4).tolist()) == [2, 2, 2, 2] and torch.isfinite(loss)
