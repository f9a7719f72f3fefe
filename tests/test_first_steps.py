"""A new user's first commands: help texts with defaults, `fgvc train` without arguments, the
demo's closing hints, and the install's pyproject."""

import argparse
import re
from pathlib import Path

import pytest

from fgvc import demo
from fgvc.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (ROOT / "src" / "fgvc" / "configs").glob("*.yaml"))
STUDIES = sorted(p.stem for p in (ROOT / "src" / "fgvc" / "configs" / "studies").glob("*.yaml"))


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_train_without_config_or_overrides_refuses_and_names_the_recipes(capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("fgvc train without arguments started a run")

    monkeypatch.setattr("fgvc.train.train", no_training)
    assert main(["train"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    for name in RECIPES:
        assert name in captured.err
    assert "--keys" in captured.err


def test_train_help_lists_every_shipped_recipe_and_points_to_the_keys(capsys):
    text = _help(["train"], capsys)
    for name in RECIPES:
        assert name in text
    assert "fgvc train --keys" in text


def test_study_help_lists_every_shipped_study_with_its_command_and_what_it_needs(capsys):
    text = _help(["study"], capsys)
    for name in STUDIES:
        assert f"fgvc study {name}" in text
    # a study on birds50 from TensorFlow Lite weights: its title, its command with the weights, and where both come from
    assert "FGVC methods at the recipe's budget" in text
    assert "FGVC_WEIGHTS=WEIGHTS_DIR fgvc study birds50_methods_full data.root=PATH_TO_BIRDS50" in text
    assert "fgvc data birds50 --cub" in text and "docs/weights.md" in text and "studies" in text


def test_train_keys_prints_every_key_with_its_default(capsys):
    from fgvc import config

    assert main(["train", "--keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = dict(line.split(None, 1) for line in lines)
    assert list(shown) == config.all_keys()
    assert shown["train.epochs"] == "100" and shown["train.lr"] == "5e-05" and shown["model.name"] == "'resnet50'"


@pytest.mark.parametrize("argv, option, default", [
    (["eval"], "--split", "test"),
    (["predict"], "--topk", "5"),
    (["serve"], "--port", "7860"),
    (["serve"], "--host", "127.0.0.1"),
    (["explain"], "--limit", "8"),
    (["attack"], "--attack", "fgsm"),
    (["data", "synth"], "--classes", "10"),
    (["gan", "sample"], "--seed", "0"),
    (["zeroshot"], "--batch-size", None),
])
def test_help_shows_defaults(argv, option, default, capsys):
    text = _help(argv, capsys)
    options = text[text.index("options:"):]  # not the usage line
    after = options[options.index(f"{option} "):]
    match = re.search(r"default: ([^)\s]+)\)?", after)
    assert match, f"{' '.join(argv)} --help does not show {option}'s default"
    if default is not None:
        assert match.group(1) == default


def _actions(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _actions(sub)
        else:
            yield parser.prog, action


def test_every_option_with_a_default_says_it():
    missing = [f"{prog} {action.option_strings or action.dest}" for prog, action in _actions(build_parser())
               if action.default not in (None, False, [], "", argparse.SUPPRESS) and action.nargs != 0
               and "default" not in (action.help or "")]
    assert missing == []


def test_demo_hint_is_the_venv_script_when_fgvc_is_not_on_path(monkeypatch, tmp_path):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "fgvc").write_text("#!/bin/sh\n")
    monkeypatch.setattr(demo.sys, "executable", str(bin_dir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert demo.fgvc_command() == str(Path("venv") / "bin" / "fgvc")
    monkeypatch.setattr("shutil.which", lambda name: "/usr/local/bin/fgvc" if name == "fgvc" else None)
    assert demo.fgvc_command() == "fgvc"


def test_a_second_demo_says_it_reuses_the_generated_data(monkeypatch, tmp_path, capsys):
    from fgvc.data import synthetic

    synthetic.generate(tmp_path / "synthbirds", classes=2, per_class=4, size=32, seed=0)  # a first demo's data

    def stop(*args, **kwargs):
        raise RuntimeError("stop after step 1")

    monkeypatch.setattr(demo, "train", stop)
    with pytest.raises(RuntimeError, match="stop after step 1"):
        demo.run_demo(tmp_path)
    out = capsys.readouterr().out
    assert out.startswith(f"1/5 reusing the birds generated in {tmp_path / 'synthbirds'}") and "delete it" in out
