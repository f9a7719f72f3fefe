"""eval_with_grad: the one "eval mode with gradients" context of the attacks and the CAMs."""

import importlib

import pytest
import torch
from torch import nn

import fgvc.robust.attacks as attacks
from fgvc.models import eval_with_grad

cam_mod = importlib.import_module("fgvc.explain.cam")  # fgvc.explain.cam is also the name of a function


def mixed_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).train()
    model[1].eval()  # e.g. a frozen backbone's BatchNorm kept in eval inside a training model
    return model


@pytest.mark.parametrize("outer", ["grad", "no_grad", "inference_mode"])
@pytest.mark.parametrize("raises", [False, True])
def test_restores_every_module_mode_and_the_grad_state_even_when_the_body_raises(outer, raises):
    model = mixed_model()
    before = [m.training for m in model.modules()]
    context = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[outer]
    with context():
        grad_before, inference_before = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        with pytest.raises(RuntimeError) if raises else torch.enable_grad():
            with eval_with_grad(model) as inside:
                assert inside is model
                assert not any(m.training for m in model.modules())
                assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
                x = torch.rand(2, 3, 8, 8, requires_grad=True)
                (grad,) = torch.autograd.grad(model(x).sum(), x)  # gradients work inside
                assert grad.abs().sum() > 0
                if raises:
                    raise RuntimeError("body failed")
        assert [m.training for m in model.modules()] == before
        assert torch.is_grad_enabled() == grad_before
        assert torch.is_inference_mode_enabled() == inference_before


def test_attacks_and_cams_use_it(monkeypatch):
    # both packages enter the one context (not a copy of their own): count its entries
    calls = []

    def counting(model):
        calls.append(type(model).__name__)
        return eval_with_grad(model)

    monkeypatch.setattr(attacks, "eval_with_grad", counting)
    monkeypatch.setattr(cam_mod, "eval_with_grad", counting)
    model = mixed_model()
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    attacks.fgsm(model, x, y, 0.03)
    attacks.pgd(model, x, y, 0.03, steps=1)
    cam_mod.gradcam(model, x, layer=model[0])
    assert calls == ["Sequential"] * 3
