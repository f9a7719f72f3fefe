"""The methods registry: plain keeps the backbone, names and settings are checked, the step dispatches."""

import pytest
import torch

from fgvc import config
from fgvc.errors import UserError
from fgvc.methods import METHODS, build_method, method_settings, train_loss
from fgvc.methods.base import Method, settings_of
from fgvc.models import create_model
from fgvc.train.mixing import soft_cross_entropy


def test_plain_keeps_the_backbone_and_its_state_dict_keys():
    backbone = create_model("resnet18", 3)
    keys = list(backbone.state_dict())
    model = build_method("plain", backbone, 3)
    assert model is backbone and list(model.state_dict()) == keys


def test_unknown_method_is_one_sentence_in_the_training_preflight():
    # the methods layer owns its names: fgvc.train.checks asks it before anything is read or written
    from fgvc.train.checks import check_training

    with pytest.raises(UserError, match=r"method.name='wsdna' \(did you mean wsdan\?\)"):
        check_training(config.load(overrides=["method.name=wsdna"]))
    with pytest.raises(UserError, match=r"method.name='WSDAN' \(did you mean wsdan\?\)"):  # the names are lower case
        check_training(config.load(overrides=["method.name=WSDAN"]))


def test_config_defaults_are_the_methods_defaults():
    # a method's settings are the keyword arguments of its make_head; the config's defaults must match
    defaults = config.MethodConfig()
    for name, cls in METHODS.items():
        for key, default in settings_of(cls).items():
            assert getattr(defaults, key) == (list(default) if isinstance(default, tuple) else default), (name, key)


def test_plain_training_step_is_one_forward_through_the_wrapper():
    model = create_model("resnet18", 3)
    calls = []

    def forward(x):
        calls.append(x)
        return model(x)

    x, target = torch.rand(2, 3, 32, 32), torch.eye(3)[:2]
    loss, logits = train_loss(model, forward, x, target, soft_cross_entropy)
    assert len(calls) == 1 and torch.allclose(loss, soft_cross_entropy(logits, target))


def test_plain_reads_no_setting():
    assert method_settings(config.MethodConfig()) == {}
    assert issubclass(METHODS["plain"], Method)


@pytest.mark.parametrize("error, says", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 80000800000 bytes. Error code 12 (Cannot allocate memory)"), "one tensor of 80.0 GB"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 74.51 GiB (GPU 0; 79.1 GiB total capacity)"),
     "one tensor of 80.0 GB"),
])
def test_a_head_too_large_for_memory_is_one_sentence_naming_its_size_settings(monkeypatch, error, says):
    from fgvc.methods import build_from_config, isqrt_cov

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(isqrt_cov.Method, "build", classmethod(fails))
    cfg = config.load(overrides=["method.name=isqrt_cov", "method.isqrt_dim=100000"])
    with pytest.raises(UserError, match=rf"method.name=isqrt_cov's head for 5 classes does not fit in memory "
                                        rf"\({says}\); lower method.isqrt_dim=100000$"):
        build_from_config(cfg.method, create_model("test_resnet", 5, pretrained=False), 5)


def test_an_error_of_a_head_that_is_not_an_allocation_stays_a_bug(monkeypatch):
    from fgvc.methods import build_from_config, isqrt_cov

    def fails(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")

    monkeypatch.setattr(isqrt_cov.Method, "build", classmethod(fails))
    cfg = config.load(overrides=["method.name=isqrt_cov"])
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        build_from_config(cfg.method, create_model("test_resnet", 5, pretrained=False), 5)
