"""Hinge losses, the lr schedule and the EMA update on known inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fgvc.gan import d_hinge_loss, g_hinge_loss
from fgvc.gan.train import lr_factor, update_ema


def test_discriminator_hinge_loss_equals_its_formula():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # mean(max(0, 1 - real)) = (0 + 0.5 + 2) / 3; mean(max(0, 1 + fake)) = (0 + 1 + 2) / 3
    assert d_hinge_loss(real, fake).item() == pytest.approx(2.5 / 3 + 3.0 / 3)


def test_discriminator_hinge_loss_ignores_logits_beyond_the_margin():
    real = torch.tensor([3.0, 0.0], requires_grad=True)
    fake = torch.tensor([-3.0, 0.0], requires_grad=True)
    d_hinge_loss(real, fake).backward()
    assert real.grad.tolist() == [0.0, -0.5] and fake.grad.tolist() == [0.0, 0.5]


def test_generator_hinge_loss_is_minus_the_mean_fake_logit():
    fake = torch.tensor([-2.0, 0.0, 5.0])
    assert g_hinge_loss(fake).item() == pytest.approx(-1.0)


def test_lr_is_constant_then_falls_linearly_to_zero():
    factors = [lr_factor(i, 10, 0.6) for i in range(10)]
    assert factors[:6] == [1.0] * 6
    assert factors[6:] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert lr_factor(10, 10, 0.6) == 0.0
    assert all(lr_factor(i, 10, 1.0) == 1.0 for i in range(10))  # decay_start 1 = constant


def test_ema_moves_parameters_by_one_minus_decay_and_copies_buffers():
    model, ema = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.fill_(3.0)
        ema.weight.fill_(1.0)
        model.running_mean.fill_(7.0)
    update_ema(ema, model, decay=0.75)
    assert ema.weight.tolist() == pytest.approx([1.5, 1.5])  # 0.75 * 1 + 0.25 * 3
    assert ema.running_mean.tolist() == [7.0, 7.0]
