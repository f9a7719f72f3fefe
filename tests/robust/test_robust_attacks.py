"""fgsm, ifgsm, pgd: budget and pixel range kept, closed forms, defaults, modes and grads left alone."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fgvc.robust as robust
from fgvc.errors import UserError
from fgvc.robust.attacks import default_ifgsm_steps


class CountForwards(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += 1
        return self.model(x)


def attack(name, model, x, y, eps, targeted=False):
    if name == "fgsm":
        return robust.fgsm(model, x, y, eps, targeted=targeted)
    if name == "ifgsm":
        return robust.ifgsm(model, x, y, eps, alpha=eps / 2 if eps else None, steps=4, targeted=targeted)
    return robust.pgd(model, x, y, eps, steps=4, targeted=targeted, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def batch():
    torch.manual_seed(1)
    x = torch.rand(8, 3, 16, 16)
    x[:, :, :4] = 0.0  # saturated pixels: the [0, 1] clip must act
    x[:, :, -4:] = 1.0
    return x, torch.randint(4, (8,))


@pytest.mark.parametrize("name", ["fgsm", "ifgsm", "pgd"])
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.03, 0.3])
def test_attack_stays_in_eps_ball_and_pixel_range(random_cnn, batch, name, targeted, eps):
    x, y = batch
    x_adv = attack(name, random_cnn, x, y, eps, targeted)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    if eps > 0:
        assert (x_adv - x).abs().max() > eps / 2  # it did perturb


def linear_softmax():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).double()
    x = torch.rand(6, 3, 2, 2, dtype=torch.float64)
    return model, x, torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_equals_closed_form_on_linear_softmax(targeted):
    model, x, y = linear_softmax()
    W, b = model[1].weight, model[1].bias
    with torch.no_grad():
        p = torch.softmax(x.flatten(1) @ W.T + b, dim=1)
        grad = ((p - F.one_hot(y, 5).double()) @ W).reshape(x.shape)  # d CE / d x = W^T (p - onehot(y))
    expected = (x + (-1 if targeted else 1) * 0.1 * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(robust.fgsm(model, x, y, 0.1, targeted=targeted), expected, rtol=0, atol=1e-12)


def test_ifgsm_one_step_of_eps_equals_fgsm(random_cnn, batch):
    x, y = batch
    assert torch.equal(robust.ifgsm(random_cnn, x, y, 0.05, alpha=0.05, steps=1), robust.fgsm(random_cnn, x, y, 0.05))


def test_ifgsm_default_steps_follow_kurakin(random_cnn, batch):
    x, y = batch
    assert [default_ifgsm_steps(e) for e in (0.0, 1 / 255, 4 / 255, 16 / 255, 0.3)] == [1, 1, 5, 20, 80]
    counted = CountForwards(random_cnn)
    robust.ifgsm(counted, x, y, 4 / 255)
    assert counted.calls == 5


def test_pgd_takes_steps_and_its_random_start_follows_the_generator(random_cnn, batch):
    x, y = batch
    counted = CountForwards(random_cnn)
    a = robust.pgd(counted, x, y, 0.05, generator=torch.Generator().manual_seed(3))
    assert counted.calls == 10
    b = robust.pgd(random_cnn, x, y, 0.05, generator=torch.Generator().manual_seed(3))
    c = robust.pgd(random_cnn, x, y, 0.05, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = robust.pgd(random_cnn, x, y, 0.05, random_start=False, generator=torch.Generator().manual_seed(4))
    e = robust.pgd(random_cnn, x, y, 0.05, random_start=False)
    assert torch.equal(d, e)


def test_targeted_pgd_reaches_the_target_class(trained_cnn, blob_test_set):
    x, y = blob_test_set[0][:128], blob_test_set[1][:128]
    target = (y + 1) % 4
    with torch.no_grad():
        before = (trained_cnn(x).argmax(1) == target).float().mean()
        after = (trained_cnn(robust.pgd(trained_cnn, x, target, 0.1, targeted=True)).argmax(1) == target).float().mean()
    assert before < 0.05 and after > 0.6


def mixed_mode_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(4))
    model(torch.rand(2, 3, 16, 16))  # materialise the lazy layer
    return model


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_attacks_restore_every_module_mode(batch, mode):
    x, y = batch
    model = mixed_mode_model().train(mode != "eval")
    if mode == "mixed":
        model[1].eval()  # e.g. a frozen backbone's BatchNorm kept in eval inside a training model
    before = [m.training for m in model.modules()]
    stats = model[1].running_mean.clone()
    for name in ("fgsm", "ifgsm", "pgd"):
        attack(name, model, x, y, 0.05)
        assert [m.training for m in model.modules()] == before
    assert torch.equal(model[1].running_mean, stats)  # attacked in eval mode: statistics not updated


def test_attacks_leave_parameter_grads_alone(random_cnn, batch):
    x, y = batch
    params = list(random_cnn.parameters())
    for p in params[::2]:
        p.grad = torch.randn_like(p)
    before = [None if p.grad is None else p.grad.clone() for p in params]
    for name in ("fgsm", "ifgsm", "pgd"):
        attack(name, random_cnn, x, y, 0.05)
    for p, g in zip(params, before):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_attacks_work_when_the_caller_disabled_grad(random_cnn, batch, context):
    x, y = batch
    expected = {name: attack(name, random_cnn, x, y, 0.05) for name in ("fgsm", "ifgsm", "pgd")}
    with context():
        for name in ("fgsm", "ifgsm", "pgd"):
            assert torch.equal(attack(name, random_cnn, x.clone(), y, 0.05), expected[name])


@pytest.mark.parametrize("kwargs", [
    {"eps": 1.5}, {"eps": -0.01}, {"eps": float("nan")}, {"eps": "big"},
    {"x": "normalised"}, {"x": "uint8"},
])
def test_bad_budgets_and_images_raise_user_error(random_cnn, batch, kwargs):
    x, y = batch
    x = {"normalised": (x - 0.5) / 0.25, "uint8": (x * 255).to(torch.uint8)}.get(kwargs.get("x"), x)
    with pytest.raises(UserError):
        robust.fgsm(random_cnn, x, y, kwargs.get("eps", 0.03))


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 2.5}, {"alpha": -1.0}, {"alpha": 0.0}])
def test_bad_steps_and_alpha_raise_user_error(random_cnn, batch, kwargs):
    x, y = batch
    with pytest.raises(UserError):
        robust.ifgsm(random_cnn, x, y, 0.03, **kwargs)
    with pytest.raises(UserError):
        robust.pgd(random_cnn, x, y, 0.03, **kwargs)
