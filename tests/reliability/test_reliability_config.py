"""Configs and the command line: every mistake is one sentence and exit code 2, never a traceback; a fuzz
test feeds config.load random keys, values and YAML and accepts nothing but UserError."""

from __future__ import annotations

import string
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import one_line_error

from fgvc import config
from fgvc.cli import main
from fgvc.errors import UserError

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("override, words", [
    ("train.epochs=three", "expects an integer, got 'three'"),
    ("train.batch_size=2.5", "expects an integer"),
    ("train.lr=fast", "expects a number"),
    ("aug.geometric=maybe", "expects true or false"),
    ("train.milestones=[30,sixty]", "expects an integer, got 'sixty'"),
    ("adv.eps=1.5", "'adv.eps' must be a pixel budget in [0, 1], got 1.5"),
    ("adv.eps=-0.1", "'adv.eps' must be a pixel budget in [0, 1], got -0.1"),
    ("train.batch_size=0", "'train.batch_size' must be 1 or more, got 0"),
    ("train.lr=-1e-3", "'train.lr' must be a positive number"),
    ("train.lr=inf", "expects a finite number"),
    ("data.val_fraction=1", "'data.val_fraction' must be a fraction in [0, 1)"),
    ("model.dropout=1.0", "'model.dropout' must be a probability in [0, 1)"),
    ("train.batchsize=8", "did you mean train.batch_size"),
    ("trian.lr=1e-3", "did you mean train.lr"),
    ("data.skip_bad_image=true", "did you mean data.skip_bad_images"),
])
def test_bad_override_on_the_command_line_is_one_sentence_and_exit_code_2(override, words, capsys, tmp_path):
    assert main(["train", override, f"out={tmp_path}"]) == 2
    assert words in one_line_error(capsys.readouterr())
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written


@pytest.mark.parametrize("text, words", [
    ("modle:\n  name: resnet18\n", "unknown config key 'modle.name'"),
    ("train:\n  lr: [1, 2]\n", "expects a number"),
    ("train:\n  epochs: {a: 1}\n", "unknown config key 'train.epochs.a'"),
    ("- train.lr=1\n", "must hold a mapping of keys, got list"),
    ("train: [1, 2\n", "is not valid YAML"),
    ("\tmodel: x\n", "is not valid YAML"),
])
def test_bad_yaml_file_is_one_sentence_naming_it(text, words, capsys, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert main(["train", str(path), f"out={tmp_path / 'runs'}"]) == 2
    line = one_line_error(capsys.readouterr())
    assert words in line and "recipe.yaml" in line


@pytest.mark.parametrize("text, where", [
    ("model:\n  name: resnet18\n train:\n  lr: 1\n", "line 3, column 2"),  # one space too few
    ("model:\n  name: resnet18\ntrain:\n  milestones: [30, 60\n", "line 5"),  # the list never closes
    ("data:\n\tname: cub200\n", "line 2, column 1"),  # a tab
])
def test_a_yaml_syntax_error_names_its_line_and_column(text, where, capsys, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert main(["train", str(path), f"out={tmp_path / 'runs'}"]) == 2
    line = one_line_error(capsys.readouterr())
    assert f"recipe.yaml is not valid YAML at {where}" in line, line


def test_config_file_in_another_encoding_is_one_sentence(capsys, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes("model:\n  name: r\u00e9snet\n".encode("utf-16"))
    assert main(["train", str(path)]) == 2
    assert "recipe.yaml is not valid YAML" in one_line_error(capsys.readouterr())


def test_unknown_dataset_names_the_closest_one(capsys):
    assert main(["train", "data.name=synthbird"]) == 2
    assert "unknown dataset 'synthbird' (did you mean 'synthbirds'?)" in one_line_error(capsys.readouterr())


def test_a_missing_required_option_is_argparse_usage_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "info", "cub200"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--root" in err and "Traceback" not in err


def test_unknown_model_names_the_closest_ones(tiny_synthbirds_root, tmp_path, capsys):
    assert main(["train", "model.name=resnet5O", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                 f"out={tmp_path}", "data.num_workers=0", "--quiet"]) == 2
    line = one_line_error(capsys.readouterr())
    assert "unknown model 'resnet5O'" in line and "did you mean resnet50" in line


def _bomb(kind: str) -> str:
    if kind == "dict":  # 2^40 keys if flattened eagerly
        lines = ["d0: &d0 {x: 1, y: 1}"] + [f"d{i}: &d{i} {{x: *d{i - 1}, y: *d{i - 1}}}" for i in range(1, 40)]
        return "\n".join(lines + ["train: {lr: *d39}"]) + "\n"
    if kind == "list":  # a value whose repr is 10^9 items long
        inner = ", ".join(["&l0 [a, a, a, a, a, a, a, a, a, a]"] + [
            f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)])
        return f"data:\n  root: [{inner}]\n"
    return "train: &a {lr: *a}\n"  # a mapping that contains itself


@pytest.mark.parametrize("kind", ["dict", "list", "recursive"])
def test_yaml_alias_bombs_are_refused_at_once(kind, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(kind))
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        config.load(path)
    assert time.perf_counter() - t0 < 2 and len(str(e.value)) < 2000


# --- fuzz ---

_KEYS = st.one_of(st.sampled_from(config.all_keys()), st.text(string.ascii_letters + "._-", max_size=20),
                  st.sampled_from(["train", "train.", ".lr", "train.lr.x", "out.x", "data.root.name", ""]))
_VALUES = st.one_of(st.text(max_size=20), st.sampled_from(["1e999", "-0", "nan", "[1,2]", "[", "true", "0x10",
                                                            "1_000", "\u0661", " 3 ", "", "=", "None"]))


@FUZZ
@given(items=st.lists(st.tuples(_KEYS, _VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=4))
def test_fuzz_overrides_give_only_user_errors(items):
    try:
        cfg = config.load(None, items)
    except UserError as e:
        assert "\n" not in str(e)
    else:
        assert config.validate(cfg) is cfg


_YAML_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                         st.lists(st.integers(-5, 5), max_size=3), st.dates())
_YAML_DOCS = st.recursive(_YAML_LEAVES, lambda children: st.one_of(
    st.dictionaries(st.one_of(_KEYS, st.integers()), children, max_size=4), st.lists(children, max_size=3)),
    max_leaves=12)


@FUZZ
@given(doc=_YAML_DOCS)
def test_fuzz_yaml_documents_give_only_user_errors(doc, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        config.load(path)
    except UserError as e:
        assert "\n" not in str(e)


@FUZZ
@given(text=st.text(max_size=120))
def test_fuzz_yaml_text_gives_only_user_errors(text, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config.load(path)
    except UserError as e:
        assert "\n" not in str(e)
