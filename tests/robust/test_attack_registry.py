"""One attack registry: the CLI, the config check, the sweep and adversarial training all read ATTACKS."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import fgvc.robust.attacks as attacks
from fgvc import config as config_mod
from fgvc.cli import build_parser
from fgvc.errors import UserError
from fgvc.robust.sweep import evaluate_attack
from fgvc.robust.training import adversarial_loss
from fgvc.train.checks import check_names


def attack_action():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["attack"]
    return parser, next(a for a in sub._actions if a.dest == "attack")


def test_cli_attack_choices_are_exactly_the_registry():
    parser, action = attack_action()
    assert list(action.choices) == list(attacks.ATTACKS)
    for name in attacks.ATTACKS:
        assert parser.parse_args(["attack", "RUN", "--attack", name]).attack == name
    with pytest.raises(SystemExit):
        parser.parse_args(["attack", "RUN", "--attack", "deepfool"])


def test_config_check_accepts_exactly_the_trainable_registry_names():
    trainable = [name for name, spec in attacks.ATTACKS.items() if spec.trainable]
    assert trainable == attacks.attack_names(trainable=True) and {"fgsm", "rs-fgsm", "pgd"} <= set(trainable)
    for name in ["none", *trainable]:  # the training preflight owns the attack names, not fgvc.config
        cfg = config_mod.load(overrides=[f"adv.attack={name}"])
        check_names(cfg)
        assert cfg.adv.attack == name
    for name in [n for n in attacks.ATTACKS if n not in trainable] + ["deepfool"]:
        with pytest.raises(UserError, match="adv.attack.*one of none, " + ", ".join(trainable)):
            check_names(config_mod.load(overrides=[f"adv.attack={name}"]))


def test_a_name_added_to_the_registry_reaches_cli_config_sweep_and_training(monkeypatch, random_cnn):
    # an alias of PGD under a new name: every consumer must accept it without being edited
    extra = dataclasses.replace(attacks.ATTACKS["pgd"], name="pgd-alias")
    monkeypatch.setitem(attacks.ATTACKS, "pgd-alias", extra)
    _, action = attack_action()
    assert "pgd-alias" in action.choices
    check_names(config_mod.load(overrides=["adv.attack=pgd-alias"]))
    torch.manual_seed(0)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    result = evaluate_attack(random_cnn, DataLoader(TensorDataset(x, y), batch_size=4), "pgd-alias", [0.05],
                             progress=False)
    assert result["settings"][0.05] == {"alpha": 2.5 * 0.05 / 10, "steps": 10}
    assert torch.isfinite(adversarial_loss(random_cnn, x, y, F.cross_entropy, "pgd-alias", eps=0.05))


def test_unknown_names_get_one_sentence_with_the_closest_one():
    with pytest.raises(UserError, match=r"unknown attack 'pdg' \(did you mean pgd\?\); choose one of fgsm, ifgsm"):
        attacks.resolve_attack("pdg", 0.03)
    with pytest.raises(UserError, match=r"attack 'ifgsm' is not one adversarial training can use; choose one of fgsm, rs-fgsm"):
        attacks.resolve_attack("ifgsm", 0.03, training=True)
    with pytest.raises(UserError, match=r"unknown adversarial training attack 'pgdd' \(did you mean pgd\?\)"):
        attacks.resolve_attack("pgdd", 0.03, training=True)
    with pytest.raises(UserError, match=r"adv\.alpha=-1"):
        attacks.resolve_attack("pgd", 0.03, alpha=-1, key="adv.")


@pytest.mark.parametrize("name, alpha, steps", [
    ("fgsm", 0.1, 1), ("ifgsm", 1 / 255, 29), ("rs-fgsm", 0.125, 1), ("pgd", 0.025, 10),
])
def test_resolved_defaults(name, alpha, steps):
    spec = attacks.resolve_attack(name, 0.1)
    assert (spec.eps, spec.alpha, spec.steps) == pytest.approx((0.1, alpha, steps))
    # given settings are used where the attack takes them, ignored where it does not
    given = attacks.resolve_attack(name, 0.1, alpha=0.01, steps=3)
    assert given.alpha == (0.01 if spec.takes_alpha else spec.alpha)
    assert given.steps == (3 if spec.takes_steps else spec.steps)


@pytest.mark.parametrize("name", ["rs-fgsm", "pgd"])
def test_a_registry_default_reaches_both_the_sweep_and_adversarial_training(monkeypatch, random_cnn, name):
    seen = []

    def default_alpha(eps, steps):
        seen.append(eps)
        return 0.123 * eps

    monkeypatch.setitem(attacks.ATTACKS, name, dataclasses.replace(attacks.ATTACKS[name], default_alpha=default_alpha))
    used = []
    iterate = attacks.iterate
    monkeypatch.setattr(attacks, "iterate", lambda *a, **k: used.append(a[5]) or iterate(*a, **k))
    torch.manual_seed(0)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    result = evaluate_attack(random_cnn, DataLoader(TensorDataset(x, y), batch_size=4), name, [0.0, 0.1],
                             progress=False)
    assert result["settings"][0.1]["alpha"] == pytest.approx(0.0123)
    assert used == [pytest.approx(0.0123)]  # the sweep's attack stepped with it
    used.clear()
    adversarial_loss(random_cnn, x, y, F.cross_entropy, name, eps=0.2, alpha=0.0, steps=3)
    assert used == [pytest.approx(0.0246)]  # alpha 0 (the config's "default") -> the registry's
    assert 0.2 in seen
