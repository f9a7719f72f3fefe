"""fgvc export: each format reloads in its own runtime and gives the PyTorch model's logits."""

import hashlib
import json
import os
import shutil

import pytest
import torch

from fgvc import api, export, runs
from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.models import create_model

ATOL = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _run_in_plain_runtime(fmt, path):
    """What a deployment without fgvc does: the format's own loader, nothing from fgvc."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


def _needs(fmt):
    if fmt == "onnx":
        for package in export.ONNX_PACKAGES:
            pytest.importorskip(package)


def _assert_same_logits(run_dir, fmt, path, batches=(1, 3)):
    model, _ = api.load(run_dir)
    size = runs.load_config(run_dir).data.image_size
    run = _run_in_plain_runtime(fmt, path)
    for b in batches:
        x = torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(7 + b))
        with torch.no_grad():
            expected, got = model(x), run(x)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=ATOL), (fmt, b, (got - expected).abs().max().item())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_exported_model_matches_pytorch_at_batch_1_and_3(tiny_run, tmp_path, fmt):
    _needs(fmt)
    out = export.export_model(tiny_run, fmt, out=tmp_path / f"model{export.FORMATS[fmt]}")
    assert out.is_file()
    _assert_same_logits(tiny_run, fmt, out)

    info = json.loads(export.sidecar_path(out).read_text())
    assert info["classes"] == json.loads((tiny_run / "classes.json").read_text())
    assert info["format"] == fmt and info["image_size"] == 32 and info["torch_version"] == torch.__version__
    assert info["input"]["range"] == [0.0, 1.0] and info["input"]["shape"] == ["batch", 3, 32, 32]
    assert "inside the model" in info["normalization"]
    assert 0 <= info["verification"]["max_abs_diff"] <= 1e-3 and info["verification"]["batches"] == [1, 3]
    # the sidecar pins the file it describes: a model renamed in without its sidecar is detectable
    data = out.read_bytes()
    assert info["sha256"] == hashlib.sha256(data).hexdigest() and info["size_bytes"] == len(data)
    assert info["extra_files"] == {}


@pytest.fixture(scope="module")
def vit_run(tiny_run, tmp_path_factory):
    """tiny_run's folder with an (untrained) timm test_vit checkpoint in place of the resnet18."""
    run = tmp_path_factory.mktemp("vit") / "run"
    shutil.copytree(tiny_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("name: resnet18", "name: test_vit"))
    assert runs.load_config(run).model.name == "test_vit"
    torch.manual_seed(0)
    runs.save_weights(create_model("test_vit", 4, image_size=32).state_dict(), run / "checkpoints" / "best.safetensors")
    return run


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_vit_exports_with_a_dynamic_batch(vit_run, tmp_path, fmt):
    _needs(fmt)
    out = export.export_model(vit_run, fmt, out=tmp_path / f"vit{export.FORMATS[fmt]}")
    _assert_same_logits(vit_run, fmt, out)


def test_cli_writes_into_the_run_by_default_and_takes_the_format_from_out(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["export", str(run), "--format", "pt2"]) == 0
    assert (run / "export" / "model.pt2").is_file() and (run / "export" / "model.pt2.json").is_file()
    assert "max abs logit difference" in capsys.readouterr().out

    assert main(["export", str(run), "--out", str(tmp_path / "m.pt")]) == 0  # .pt -> torchscript
    assert json.loads((tmp_path / "m.pt.json").read_text())["format"] == "torchscript"


def test_fixed_batch_is_recorded_and_enforced(tiny_run, tmp_path):
    out = export.export_model(tiny_run, "pt2", out=tmp_path / "b2.pt2", batch="2")
    info = json.loads(export.sidecar_path(out).read_text())
    assert info["input"]["shape"] == [2, 3, 32, 32] and info["verification"]["batches"] == [2]
    _assert_same_logits(tiny_run, "pt2", out, batches=(2,))
    with pytest.raises(Exception):  # noqa: B017 - torch.export's guard error type is internal
        torch.export.load(str(out)).module()(torch.rand(3, 3, 32, 32))


def test_not_a_run_dir_exits_2_with_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "pt2"]) == 2
    err = capsys.readouterr().err
    assert "not an fgvc run directory" in err and err.count("\n") == 1


def test_damaged_checkpoint_exits_2(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / "best.safetensors").write_bytes(b"not safetensors")
    assert main(["export", str(run), "--format", "torchscript"]) == 2
    assert "best.safetensors" in capsys.readouterr().err
    assert not (run / "export" / "model.pt").exists()


def test_bad_batch_exits_2(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run), "--format", "pt2", "--batch", "0", "--out", str(tmp_path / "m.pt2")]) == 2
    assert "--batch" in capsys.readouterr().err


def test_failed_export_leaves_the_existing_file_untouched(tiny_run, tmp_path, monkeypatch, capsys):
    out, sidecar = tmp_path / "model.pt", tmp_path / "model.pt.json"
    out.write_bytes(b"previous model")
    sidecar.write_text("previous sidecar")

    def broken(model, example, path, dynamic):
        path.write_bytes(b"half a model")
        raise RuntimeError("unsupported operator aten::frobnicate")

    monkeypatch.setitem(export.EXPORTERS, "torchscript", broken)
    assert main(["export", str(tiny_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "aten::frobnicate" in err and "--format" in err
    assert out.read_bytes() == b"previous model" and sidecar.read_text() == "previous sidecar"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.json"]  # no temp folder left


def test_an_export_that_changes_the_logits_is_rejected_and_not_written(tiny_run, tmp_path, monkeypatch):
    real = export.LOADERS["pt2"]
    monkeypatch.setitem(export.LOADERS, "pt2", lambda path: (lambda x, run=real(path): run(x) + 0.01))
    out = tmp_path / "model.pt2"
    with pytest.raises(UserError, match="differs from the PyTorch model by up to 0.01"):
        export.export_model(tiny_run, "pt2", out=out)
    assert list(tmp_path.iterdir()) == []
    # the same drift passes under a looser tolerance
    assert export.export_model(tiny_run, "pt2", out=out, tolerance=0.02) == out


def test_onnx_without_its_packages_says_how_to_install(tiny_run, tmp_path, monkeypatch, capsys):
    real = export.importlib.util.find_spec
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: None if name == "onnxscript" else real(name))
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "onnxscript" in err and "pip install" in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


def test_out_with_another_formats_suffix_is_refused(tiny_run, tmp_path):
    with pytest.raises(UserError, match="m.pt2"):
        export.export_model(tiny_run, "pt2", out=tmp_path / "m.onnx")


@pytest.fixture
def fake_pt2(monkeypatch):
    """pt2 'export' in milliseconds: writes a stub file and reloads as the PyTorch model itself (wrapped by ``wrap``)."""
    state = {"wrap": lambda model: model}

    def write(model, example, path, dynamic):
        state["model"] = model
        path.write_bytes(b"stub pt2")

    monkeypatch.setitem(export.EXPORTERS, "pt2", write)
    monkeypatch.setitem(export.LOADERS, "pt2", lambda path: state["wrap"](state["model"]))
    return state


def test_a_reloaded_file_that_fails_at_one_batch_exits_2_with_one_line(tiny_run, tmp_path, fake_pt2, capsys):
    out, sidecar = tmp_path / "model.pt2", tmp_path / "model.pt2.json"
    out.write_bytes(b"previous model")
    sidecar.write_text("previous sidecar")

    def baked_batch(model):
        def run(x):
            if x.shape[0] != 1:
                raise RuntimeError("shape '[1, 512]' is invalid for input of size 1536\n  (a long trace)")
            return model(x)
        return run

    fake_pt2["wrap"] = baked_batch
    assert main(["export", str(tiny_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pt2 export" in err and "batch of 3" in err and "is invalid for input of size 1536" in err
    assert "--batch N" in err and "--format" in err and "nothing was written" in err
    assert out.read_bytes() == b"previous model" and sidecar.read_text() == "previous sidecar"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2", "model.pt2.json"]  # no temp folder left

    # a fixed batch that fails too: another format is the fix
    with pytest.raises(UserError, match=r"fails on a batch of 2 .*try --format onnx or torchscript;"):
        export.export_model(tiny_run, "pt2", out=out, batch=2)
    assert out.read_bytes() == b"previous model"


def test_out_folder_gets_model_ext_inside(tiny_run, tmp_path, fake_pt2):
    new = str(tmp_path / "deploy") + os.sep  # a trailing separator: a folder, created
    assert main(["export", str(tiny_run), "--format", "pt2", "--out", new]) == 0
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["model.pt2", "model.pt2.json"]
    assert json.loads((tmp_path / "deploy" / "model.pt2.json").read_text())["file"] == "model.pt2"

    (tmp_path / "existing").mkdir()  # an existing folder, with or without the separator
    assert export.export_model(tiny_run, "pt2", out=tmp_path / "existing") == tmp_path / "existing" / "model.pt2"
    assert (tmp_path / "existing" / "model.pt2.json").is_file()


@pytest.mark.parametrize("name", ["deploy", "birds.bin"])
def test_out_that_is_neither_a_folder_nor_a_model_file_is_refused(tiny_run, tmp_path, fake_pt2, capsys, name):
    assert main(["export", str(tiny_run), "--format", "pt2", "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{name}{os.sep}" in err and f"{name}.pt2" in err
    assert list(tmp_path.iterdir()) == []


def test_out_with_a_separator_naming_a_file_is_refused(tiny_run, tmp_path, fake_pt2):
    (tmp_path / "deploy").write_text("a file")
    with pytest.raises(UserError, match="is a file"):
        export.export_model(tiny_run, "pt2", out=str(tmp_path / "deploy") + os.sep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]
