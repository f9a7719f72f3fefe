"""Output folders and small CLI faults from a new-user review: an output path that is a file is one
sentence before any work (every command that makes a folder), a probe never overwrites a finished
one and honours `out=`, de-duplicated model hints, CLI wording for `data synth`, no empty folder
left by a failed `data prepare`, `predict --topk 0` refused, `data synth` progress."""

from __future__ import annotations

import json

import pytest
from reliability_helpers import one_line_error

from fgvc.cli import main
from fgvc.data import synthetic
from fgvc.errors import UserError

TINY = ["model.name=resnet18", "data.name=synthbirds", "data.image_size=32", "data.num_workers=0",
        "train.batch_size=16", "train.epochs=1"]


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x\n")
    return path


def _refused(capsys, argv, what: str, path) -> str:
    assert main([str(a) for a in argv]) == 2
    line = one_line_error(capsys.readouterr())
    assert f"{what} {path}" in line and "file, not a folder" in line, line
    return line


def _only_the_file(tmp_path, afile):
    assert sorted(p.name for p in tmp_path.iterdir()) == [afile.name]
    assert afile.read_text() == "x\n"


# the dataset root does not exist: a command that read data before checking its output folder
# would stop on the data instead
@pytest.mark.parametrize("argv", [
    ["train", *TINY, "data.root={missing}", "out={out}", "--quiet"],
    ["gan", "train", "data.root={missing}", "data.image_size=32", "iterations=1", "out={out}", "--quiet"],
    ["probe", *TINY, "data.root={missing}", "out={out}", "--quiet"],
], ids=["train", "gan", "probe"])
@pytest.mark.parametrize("under", [False, True], ids=["file", "under-file"])
def test_out_key_naming_a_file_is_one_sentence_before_any_data_is_read(argv, under, tmp_path, afile, capsys):
    out = afile / "sub" if under else afile
    argv = [a.format(missing=tmp_path / "missing", out=out) for a in argv]
    line = _refused(capsys, argv, "out", out)
    assert ("lies under" in line) == under
    _only_the_file(tmp_path, afile)


@pytest.mark.parametrize("argv", [
    ["probe", *TINY, "data.root={missing}", "--out", "{out}", "--quiet"],
    ["data", "audit", "synthbirds", "--root", "{missing}", "--out", "{out}", "--quiet"],
    ["data", "synth", "--root", "{out}", "--classes", "2", "--per-class", "4", "--size", "32"],
    ["report", "{tmp}", "--out", "{out}"],
    ["gan", "sample", "{missing}", "--per-class", "1", "--out", "{out}"],
    ["demo", "--out", "{out}"],
    ["zeroshot", "--data", "synthbirds", "--root", "{missing}", "--offline", "--out", "{out}"],
    ["clip", "probe", "--data", "synthbirds", "--root", "{missing}", "--offline", "--out", "{out}"],
    ["weights", "zeroshot", "{missing}", "--labels", "{missing}", "--data", "synthbirds", "--root", "{missing}",
     "--out", "{out}"],
    ["weights", "import", "{missing}.tflite", "--out", "{out}"],
    ["study", "table1_depth", "--out", "{out}"],
    ["data", "prepare", "cub200", "--root", "{out}", "--url", "http://127.0.0.1:9/CUB_200_2011.tgz"],
], ids=["probe", "audit", "synth", "report", "sample", "demo", "zeroshot", "clip", "weights-zeroshot",
        "weights-import", "study", "prepare"])
def test_dash_dash_out_naming_a_file_is_one_sentence_before_any_work(argv, tmp_path, afile, capsys):
    out = afile / "sub"  # a folder under a file: mkdir's NotADirectoryError before
    argv = [a.format(missing=tmp_path / "missing", out=out, tmp=tmp_path) for a in argv]
    _refused(capsys, argv, argv[argv.index(str(out)) - 1], out)  # --out, or --root for data synth / prepare
    _only_the_file(tmp_path, afile)


def test_explain_out_naming_a_file_is_one_sentence(tiny_run, tmp_path, afile, capsys):
    _refused(capsys, ["explain", tiny_run, "--limit", "1", "--out", afile], "--out", afile)
    assert not (tiny_run / "explain").exists()


def test_probe_honours_out_and_never_overwrites_a_finished_probe(tiny_synthbirds_root, tmp_path, capsys):
    argv = ["probe", *TINY, f"data.root={tiny_synthbirds_root}", f"out={tmp_path / 'p'}", "--quiet"]
    assert main(argv) == 0
    first = tmp_path / "p" / "probe-synthbirds-resnet18"
    assert capsys.readouterr().out.splitlines()[-1] == str(first)
    before = (first / "metrics.json").read_bytes()
    assert main(argv) == 0  # a rerun: a new folder beside it, like `fgvc train`
    assert capsys.readouterr().out.splitlines()[-1] == str(first) + "-2"
    assert (first / "metrics.json").read_bytes() == before
    assert main([*argv, "--out", str(first)]) == 2  # --out at a finished probe: refused, untouched
    line = one_line_error(capsys.readouterr())
    assert "finished probe" in line and "--out" in line
    assert (first / "metrics.json").read_bytes() == before


def test_model_name_hint_names_each_model_once():
    from fgvc.models import create_model

    with pytest.raises(UserError) as e:
        create_model("resnet19", 4)
    line = str(e.value)
    hint = line.split("did you mean ")[1].split("?")[0].split(" or ")
    assert "resnet18" in hint and len(hint) == len(set(hint)), line


def test_synth_says_overwrite_in_the_callers_words(tiny_synthbirds_root, capsys):
    assert main(["data", "synth", "--root", str(tiny_synthbirds_root)]) == 2
    line = one_line_error(capsys.readouterr())
    assert "--overwrite" in line and "overwrite=True" not in line, line
    with pytest.raises(UserError) as e:
        synthetic.generate(tiny_synthbirds_root, classes=2, per_class=4, size=32)
    assert "overwrite=True" in str(e.value) and "--overwrite" not in str(e.value)


def test_synth_shows_progress_unless_quiet(tmp_path, capsys):
    assert main(["data", "synth", "--root", str(tmp_path / "a"), "--classes", "2", "--per-class", "4",
                 "--size", "32"]) == 0
    err = capsys.readouterr().err
    assert "synthbirds:" in err and "img" in err, err  # the bar: "synthbirds: 50%| 4/8 [..., 52img/s]"
    assert main(["data", "synth", "--root", str(tmp_path / "b"), "--classes", "2", "--per-class", "4",
                 "--size", "32", "--quiet"]) == 0
    assert "synthbirds:" not in capsys.readouterr().err


def test_failed_prepare_removes_only_the_folders_it_made(tmp_path, capsys):
    url = "http://127.0.0.1:9/CUB_200_2011.tgz"  # port 9 (discard): connection refused, no network needed
    root = tmp_path / "new" / "data"
    assert main(["data", "prepare", "cub200", "--root", str(root), "--url", url]) == 2
    one_line_error(capsys.readouterr())
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["data", "prepare", "cub200", "--root", str(kept), "--url", url]) == 2
    assert kept.is_dir()  # it existed before: never removed


def test_predict_refuses_topk_below_one_and_caps_a_large_one(tiny_run, tiny_synthbirds_root, capsys):
    image = next((tiny_synthbirds_root / "CUB_200_2011" / "images").rglob("*.jpg"))
    assert main(["predict", str(tiny_run), str(image), "--topk", "0"]) == 2
    assert "--topk" in one_line_error(capsys.readouterr())
    assert main(["predict", str(tiny_run), str(image), "--topk", "50", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["top"]) == 4  # all 4 classes
