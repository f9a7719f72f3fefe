"""WiSE-FT is scored after training through the loop's ``after`` hook: the loop never names CLIP, and every
command that may train a CLIP config (`fgvc train`, `fgvc clip finetune`, a study row) passes the step."""

from pathlib import Path

from fgvc import config
from fgvc.cli import main
from fgvc.clip import finetune
from fgvc.train import loop


def test_the_step_is_wise_ft_for_a_clip_config_with_alphas_and_nothing_otherwise(monkeypatch):
    scored = []
    monkeypatch.setattr(finetune, "score_wise_ft", lambda run_dir, progress=True: scored.append((run_dir, progress)))
    assert finetune.after_training(config.load(None, {"model.name": "resnet18"})) is None
    assert finetune.after_training(config.load(None, {"model.name": "clip:ViT-B-32", "clip.wise_ft_alphas": []})) is None
    step = finetune.after_training(config.load(None, {"model.name": "clip:ViT-B-32"}), progress=False)
    step(Path("run"))
    assert scored == [(Path("run"), False)]


def test_train_runs_the_step_on_the_finished_run(monkeypatch, tmp_path):
    monkeypatch.setattr(loop, "fit", lambda cfg, run_dir, resume, progress, on_open=None: tmp_path / "run")
    seen = []
    assert loop.train(config.Config(), after=seen.append) == tmp_path / "run"
    assert seen == [tmp_path / "run"]


def test_fgvc_train_hands_the_loop_the_wise_ft_step_of_a_clip_config(monkeypatch, tmp_path, capsys):
    import fgvc.train

    handed = {}

    def fake_train(cfg, run_dir=None, resume=False, progress=True, after=None):
        handed[cfg.model.name] = after
        (tmp_path / "metrics.json").write_text("{}")
        return tmp_path

    monkeypatch.setattr(fgvc.train, "train", fake_train)
    assert main(["train", "model.name=clip:ViT-B-32", "--quiet"]) == 0
    assert main(["train", "model.name=resnet18", "--quiet"]) == 0
    assert callable(handed["clip:ViT-B-32"]) and handed["resnet18"] is None
