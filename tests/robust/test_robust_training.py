"""Adversarial training (Eq. 1): the loss, what it leaves alone, that it helps; the probe and the overfitting rule."""

import functools

import pytest
import torch
import torch.nn.functional as F
from robust_toys import accuracy, train_blobs
from test_robust_attacks import mixed_mode_model
from torch import nn

import fgvc.robust as robust
from fgvc.errors import UserError
from fgvc.robust.training import adversarial_loss, catastrophic_overfitting, robust_accuracy_probe


def test_attacks_lower_the_accuracy_of_a_trained_model(trained_cnn, blob_test_set):
    x, y = blob_test_set
    clean = accuracy(trained_cnn, x, y)
    fgsm = accuracy(trained_cnn, robust.fgsm(trained_cnn, x, y, 0.1), y)
    pgd = accuracy(trained_cnn, robust.pgd(trained_cnn, x, y, 0.1), y)
    ifgsm = accuracy(trained_cnn, robust.ifgsm(trained_cnn, x, y, 0.1), y)
    assert clean >= 0.95
    assert fgsm <= clean - 0.4
    assert pgd <= fgsm and ifgsm <= fgsm


def test_adversarial_training_raises_fgsm_accuracy_at_its_eps(trained_cnn, blob_test_set):
    x, y = blob_test_set
    eps = 0.05
    hardened = train_blobs(functools.partial(
        adversarial_loss, loss_fn=F.cross_entropy, attack="fgsm", eps=eps, loss_weight=0.5))
    standard_fgsm = accuracy(trained_cnn, robust.fgsm(trained_cnn, x, y, eps), y)
    hardened_fgsm = accuracy(hardened, robust.fgsm(hardened, x, y, eps), y)
    assert accuracy(hardened, x, y) >= 0.95
    assert hardened_fgsm >= standard_fgsm + 0.1


def plain_cnn():
    """No BatchNorm or dropout, so train and eval mode compute the same function."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_adversarial_loss_is_eq1_with_fgsm(blob_test_set, w):
    model = plain_cnn().train()
    x, y = blob_test_set[0][:32], blob_test_set[1][:32]
    expected = w * F.cross_entropy(model(x), y) + (1 - w) * F.cross_entropy(model(robust.fgsm(model, x, y, 0.05)), y)
    got = adversarial_loss(model, x, y, F.cross_entropy, "fgsm", eps=0.05, loss_weight=w)
    torch.testing.assert_close(got, expected)


class RecordInputs(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("attack", ["fgsm", "rs-fgsm", "pgd"])
def test_adversarial_term_sees_a_perturbed_batch_inside_the_budget(blob_test_set, attack):
    x, y = blob_test_set[0][:16], blob_test_set[1][:16]
    model = RecordInputs(plain_cnn())
    adversarial_loss(model, x, y, F.cross_entropy, attack, eps=0.05, steps=3, loss_weight=0.5)
    search = {"fgsm": 1, "rs-fgsm": 1, "pgd": 3}[attack]
    assert len(model.inputs) == search + 2  # search forwards, then clean and adversarial loss terms
    x_adv = model.inputs[-1]
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 0.04
    assert accuracy(model.model, x_adv, y) <= accuracy(model.model, x, y)


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_adversarial_loss_keeps_modes_and_only_its_backward_writes_grads(blob_test_set, mode):
    x, y = blob_test_set[0][:16], blob_test_set[1][:16]
    model = mixed_mode_model().train(mode != "eval")
    if mode == "mixed":
        model[1].eval()
    before = [m.training for m in model.modules()]
    batches = model[1].num_batches_tracked.item()
    loss = adversarial_loss(model, x, y, F.cross_entropy, "pgd", eps=0.05, steps=3)
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())
    # the search runs in eval mode: running statistics see only the two loss forwards
    assert model[1].num_batches_tracked.item() == batches + (2 if mode == "train" else 0)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_adversarial_loss_takes_soft_targets(blob_test_set):
    x, y = blob_test_set[0][:16], blob_test_set[1][:16]
    model = plain_cnn().train()

    def soft_ce(logits, target):
        return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()

    torch.manual_seed(5)
    soft = adversarial_loss(model, x, F.one_hot(y, 4).float(), soft_ce, "rs-fgsm", eps=0.05)
    torch.manual_seed(5)
    hard = adversarial_loss(model, x, y, F.cross_entropy, "rs-fgsm", eps=0.05)
    torch.testing.assert_close(soft, hard)
    mixed = 0.7 * F.one_hot(y, 4).float() + 0.3 * F.one_hot(y.roll(1), 4).float()  # mixup-style targets
    assert torch.isfinite(adversarial_loss(model, x, mixed, soft_ce, "pgd", eps=0.05, steps=2))


@pytest.mark.parametrize("kwargs", [{"attack": "cw"}, {"loss_weight": 1.5}, {"eps": 2.0}, {"attack": "pgd", "steps": -1}])
def test_adversarial_loss_rejects_bad_settings(blob_test_set, kwargs):
    x, y = blob_test_set[0][:4], blob_test_set[1][:4]
    with pytest.raises(UserError):
        adversarial_loss(plain_cnn(), x, y, F.cross_entropy, **{"attack": "fgsm", "eps": 0.05, **kwargs})


def test_probe_orders_clean_fgsm_pgd_and_is_repeatable(trained_cnn, blob_test_set):
    x, y = blob_test_set[0][:128], blob_test_set[1][:128]
    trained_cnn.train()
    try:
        probe = robust_accuracy_probe(trained_cnn, x, y, 0.1)
        assert trained_cnn.training
    finally:
        trained_cnn.eval()
    assert set(probe) == {"clean", "fgsm", "pgd"}
    assert probe["clean"] >= 0.95 and probe["clean"] > probe["fgsm"] >= probe["pgd"]
    assert robust_accuracy_probe(trained_cnn, x, y, 0.1) == probe


def test_catastrophic_overfitting_flags_pgd_collapse_while_fgsm_rises():
    epochs = lambda *pairs: [{"fgsm": f, "pgd": p} for f, p in pairs]  # noqa: E731
    assert catastrophic_overfitting(epochs((0.40, 0.35), (0.45, 0.38), (0.80, 0.02)))
    assert not catastrophic_overfitting(epochs((0.40, 0.35), (0.45, 0.38), (0.47, 0.39)))  # healthy
    assert not catastrophic_overfitting(epochs((0.40, 0.35), (0.20, 0.05)))  # both fell: divergence, not CO
    assert not catastrophic_overfitting(epochs((0.10, 0.08), (0.12, 0.03)))  # wobble near zero
    assert not catastrophic_overfitting(epochs((0.40, 0.35)))
