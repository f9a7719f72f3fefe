"""The training preflight (fgvc.train.checks) owns the names of other layers: an attack or logger name the
config module no longer knows is still refused in one sentence, before anything is written, by `fgvc train`
and by `fgvc study` for every row before its first row runs."""

import pytest
import yaml

from fgvc import config
from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.experiments.study import run_study
from fgvc.train.checks import check_names, check_training


def test_the_config_loads_names_it_does_not_own_and_the_preflight_refuses_them():
    cfg = config.load(None, {"adv.attack": "deepfool", "train.loggers": "tensorbord"})  # types and ranges only
    with pytest.raises(UserError, match=r"config key 'adv.attack' must be one of none, fgsm"):
        check_training(cfg)
    cfg.adv.attack = "none"
    with pytest.raises(UserError, match=r"unknown logger 'tensorbord' \(did you mean tensorboard\?\)"):
        check_names(cfg)


def test_fgvc_train_refuses_an_unknown_attack_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "model.name=test_resnet", "data.name=synthbirds", f"data.root={tmp_path}",
                 "adv.attack=deepfool", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "adv.attack" in err and "deepfool" in err, err
    assert not out.exists()


def test_a_study_refuses_a_bad_name_in_its_last_row_before_the_first_row_trains(tmp_path, monkeypatch):
    import fgvc.train

    trained = []
    monkeypatch.setattr(fgvc.train, "train", lambda cfg, run_dir, **kw: trained.append(run_dir))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": "synthbirds_cpu", "rows": {"a": [], "b": ["adv.attack=deepfool"]}}))
    with pytest.raises(UserError, match="adv.attack"):
        run_study(str(path), ["data.root=x"], out=tmp_path / "out", progress=False)
    assert trained == [] and not (tmp_path / "out").exists()
