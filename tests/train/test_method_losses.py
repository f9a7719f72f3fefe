"""loss.center and loss.pairwise_confusion with an FGVC method: exactly the terms they define for a method whose
training step is one scored forward pass per image, and refused in one sentence (exit code 2, nothing written) for
every other method, whose several passes or criterion calls the criterion would score other than defined."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fgvc.cli import main
from fgvc.methods import METHODS, build_method, train_loss
from fgvc.models import create_model
from fgvc.train.losses import Criterion, pairwise_confusion
from fgvc.train.mixing import soft_cross_entropy

SMALL = {"plain": {}, "bilinear": {"bilinear_dim": 4}, "isqrt_cov": {"isqrt_dim": 4}, "wsdan": {"attention_maps": 4},
         "cal": {"attention_maps": 4}, "pmg": {"pmg_width": 8}, "api_net": {"api_hidden": 8}}
TAKE = [name for name, cls in METHODS.items() if cls.takes_feature_losses]
REFUSE = [name for name, cls in METHODS.items() if not cls.takes_feature_losses]


def test_every_method_is_checked_here():
    assert set(SMALL) == set(METHODS) and TAKE and REFUSE


@pytest.mark.parametrize("name", TAKE)
def test_a_method_of_one_pass_per_image_gets_exactly_both_terms(name):
    torch.manual_seed(0)
    model = build_method(name, create_model("test_resnet", 4), 4, 0.0, **SMALL[name]).train()
    criterion = Criterion(soft_cross_entropy, pc_weight=0.7, center_weight=0.3, num_classes=4)
    criterion.attach(model)
    features = []
    model.head.register_forward_pre_hook(lambda module, args: features.append(args[0].detach().flatten(1)))
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    target = F.one_hot(y, 4).float()
    loss, logits = train_loss(model, model, torch.rand(8, 3, 64, 64), target, criterion, step=lambda loss: None)
    (f,) = features  # one pass: the features of the logits the criterion scored
    # centres start at zero: the center term is 1/2 mean ||f||^2 (Wen et al.), beside CE and pairwise confusion
    expected = (soft_cross_entropy(logits, target) + 0.7 * pairwise_confusion(F.softmax(logits, 1), y)
                + 0.3 * 0.5 * f.pow(2).sum(1).mean())
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(loss, soft_cross_entropy(logits, target), atol=1e-4)
    assert criterion.centers.abs().sum() > 0  # and the centres moved


@pytest.mark.parametrize("key", ["loss.center", "loss.pairwise_confusion"])
@pytest.mark.parametrize("name", REFUSE)
def test_a_method_of_several_scored_passes_refuses_the_loss_in_one_sentence(name, key, tiny_synthbirds_root, tmp_path,
                                                                            capsys):
    out = tmp_path / "runs"
    pk = ["data.sampler=pk", "data.pk_images=2"] if METHODS[name].needs_pk_batches else []
    assert main(["train", "model.name=test_resnet", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                 "train.batch_size=8", f"method.name={name}", *pk, f"{key}=0.1", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"method.name={name} cannot train with {key}=0.1: its training step scores" in err
    assert f"set {key}=0" in err
    # the alternative: WS-DAN's and CAL's own centre loss, else the methods that take the loss
    own = key == "loss.center" and METHODS[name].own_center_loss
    assert ("method.center_weight" in err) == bool(own) and ("method.name=plain" in err) == (not own), err
    assert not out.exists()
