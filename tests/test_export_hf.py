"""fgvc export --format hf: a folder timm (and plain PyTorch) loads offline, with fgvc's logits."""

import json
import os
import re
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file

from fgvc import api, export, export_hf, runs
from fgvc.cli import main
from fgvc.data.transforms import load_eval_image
from fgvc.errors import UserError
from fgvc.models import create_model

ATOL = 1e-4


def _logits_agree(run_dir, net, batches=(1, 3)):
    """``net`` (a bare timm / torchvision network) on normalised inputs vs the fgvc run's model on [0, 1]."""
    model, _ = api.load(run_dir)
    size = runs.load_config(run_dir).data.image_size
    net.eval()
    for b in batches:
        x = torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(11 + b))
        with torch.no_grad():
            expected, got = model(x), net(model.normalize(x))
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=ATOL), (b, (got - expected).abs().max().item())


def _fake_run(tiny_run, tmp_path, name):
    """tiny_run's folder with an untrained ``name`` checkpoint (random head, so a dropped head shows)."""
    run = tmp_path / name
    shutil.copytree(tiny_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("name: resnet18", f"name: {name}"))
    torch.manual_seed(0)
    model = create_model(name, 4, image_size=32)
    with torch.no_grad():
        for m in model.modules():  # non-trivial BatchNorm statistics, so running stats must travel too
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    runs.save_weights(model.state_dict(), run / "checkpoints" / "best.safetensors")
    return run


@pytest.fixture(scope="module")
def resnet_export(tiny_run, tmp_path_factory):
    return export.export_model(tiny_run, "hf", out=tmp_path_factory.mktemp("hf") / "resnet18")


def test_resnet_folder_layout_config_and_keys(resnet_export, tiny_run):
    assert sorted(p.name for p in resnet_export.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((resnet_export / "config.json").read_text())
    classes = json.loads((tiny_run / "classes.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 4 and config["label_names"] == classes
    assert config["model_args"] == {"num_classes": 4}
    p = config["pretrained_cfg"]
    model, _ = api.load(tiny_run)
    assert p["input_size"] == [3, 32, 32] and p["num_classes"] == 4 and p["interpolation"] == "bilinear"
    assert p["mean"] == pytest.approx(model.normalize.mean.flatten().tolist())
    assert p["std"] == pytest.approx(model.normalize.std.flatten().tolist())
    # timm's eval resize, floor(size / crop_pct), is fgvc's resize side round(size / 0.875) = 37
    assert int(32 / p["crop_pct"]) == 37 == config["fgvc"]["preprocessing"]["resize_shorter_side"]
    assert "tag" not in p and "hf_hub_id" not in p  # the ImageNet source checkpoint's facts are not ours
    keys = set(load_file(resnet_export / "model.safetensors"))
    assert {"fc.weight", "fc.bias", "conv1.weight", "bn1.running_mean"} <= keys
    assert not any(k.startswith(("net.", "normalize.", "fc.1.")) for k in keys)
    assert config["fgvc"]["verification"]["max_abs_diff"] <= 1e-3
    # made to be shared: the run is named, no path of the exporting machine is written
    assert config["fgvc"]["run"] == tiny_run.name and str(tiny_run.parent) not in json.dumps(config)


def test_timm_builds_the_model_from_the_file_offline_with_fgvc_logits(resnet_export, tiny_run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    file = str(resnet_export / "model.safetensors")
    net = timm.create_model("resnet18", pretrained=True, num_classes=4,
                            pretrained_cfg_overlay=dict(file=file, num_classes=4))
    _logits_agree(tiny_run, net)
    _logits_agree(tiny_run, timm.create_model(f"local-dir:{resnet_export}", pretrained=True))
    # the torchvision twin takes the same file (timm's ResNet names are torchvision's)
    import torchvision

    tv = torchvision.models.resnet18(num_classes=4)
    tv.load_state_dict(load_file(file))
    _logits_agree(tiny_run, tv)


def test_model_card_and_its_plain_pytorch_snippet_give_fgvc_logits(resnet_export, tiny_run, tiny_synthbirds_root,
                                                                   tmp_path, monkeypatch):
    card = (resnet_export / "README.md").read_text()
    metrics = runs.read_metrics(tiny_run)
    assert card.startswith("---\nlibrary_name: timm")
    lr = runs.load_config(tiny_run).train.lr
    assert f"| test_acc | {metrics['test_acc']:.4f} |" in card and f"| `train.lr` | {lr:g} |" in card
    assert "trained from random initialisation" in card  # metrics.json's "pretrained": scratch
    assert "synthbirds" in card and str(tiny_run.parent) not in card  # no path of this machine
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    snippet = next(b for b in blocks if "def preprocess" in b)
    image = sorted(tiny_synthbirds_root.rglob("*.jpg"))[0]
    work = tmp_path / "card"
    shutil.copytree(resnet_export, work)
    shutil.copy(image, work / "bird.jpg")
    monkeypatch.chdir(work)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # prints the class; defines model and logits
    model, classes = api.load(tiny_run)
    x = load_eval_image(image, 32)  # fgvc's own evaluation input
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(scope["logits"], expected, atol=ATOL), (scope["logits"] - expected).abs().max()
    # and the torchvision snippet of the card builds the same network
    tv_block = next(b for b in blocks if "torchvision.models" in b)
    exec(compile(tv_block, "README.md", "exec"), scope)
    with torch.no_grad():
        assert torch.allclose(scope["model"](model.normalize(x)), expected, atol=ATOL)


@pytest.mark.parametrize("name", ["tf_mobilenetv2_100", "test_vit"])
def test_timm_and_tf_port_models_load_with_their_kwargs(tiny_run, tmp_path, name):
    run = _fake_run(tiny_run, tmp_path, name)
    out = export.export_model(run, "hf", out=tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    file = str(out / "model.safetensors")
    if name == "tf_mobilenetv2_100":
        assert config["architecture"] == "mobilenetv2_100" and config["model_args"]["pad_type"] == "same"
        net = timm.create_model("mobilenetv2_100", pretrained=True, num_classes=4, pad_type="same",
                                pretrained_cfg_overlay=dict(file=file, num_classes=4))
        _logits_agree(run, net)
        # without TensorFlow's padding the same weights compute something else: the kwarg is needed
        plain = timm.create_model("mobilenetv2_100", pretrained=True, num_classes=4,
                                  pretrained_cfg_overlay=dict(file=file, num_classes=4))
        with pytest.raises(AssertionError):
            _logits_agree(run, plain)
    else:
        assert config["model_args"] == {"num_classes": 4, "img_size": 32}
        net = timm.create_model("test_vit", pretrained=True, num_classes=4, img_size=32,
                                pretrained_cfg_overlay=dict(file=file, num_classes=4))
        _logits_agree(run, net)
    _logits_agree(run, timm.create_model(f"local-dir:{out}", pretrained=True))


def test_torchvision_vit_keys_map_onto_timm_vit():
    """fgvc's vit_b_16 / vit_l_16 are torchvision ViTs; the renaming is checked on a 2-block one."""
    from torch import nn
    from torchvision.models.vision_transformer import VisionTransformer as TV

    torch.manual_seed(0)
    tv = TV(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128)
    tv.heads = nn.Sequential(nn.Dropout(0.0), nn.Linear(64, 5))
    with torch.no_grad():
        tv.class_token.normal_()
        tv.encoder.pos_embedding.normal_()
    tm = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=2,
                                                          num_heads=2, mlp_ratio=2.0, num_classes=5)
    tm.load_state_dict(export_hf._vit_keys(tv.state_dict()), strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(tm.eval()(x), tv.eval()(x), atol=1e-5)


@pytest.mark.slow
def test_vit_b_16_exports_as_timm_vit_base(tiny_run, tmp_path):
    run = _fake_run(tiny_run, tmp_path, "vit_b_16")
    out = export.export_model(run, "hf", out=tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["architecture"] == "vit_base_patch16_224"
    _logits_agree(run, timm.create_model(f"local-dir:{out}", pretrained=True), batches=(2,))


def test_cli_writes_the_folder_and_refuses_bad_outputs(tiny_run, tmp_path, capsys):
    out = tmp_path / "folder"
    assert main(["export", str(tiny_run), "--format", "hf", "--out", str(out)]) == 0
    assert "timm loads the folder" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    assert main(["export", str(tiny_run), "--format", "hf", "--out", str(out)]) == 0  # replaces its own export
    (tmp_path / "file.txt").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for bad in (["--out", str(tmp_path / "file.txt")], ["--out", str(other)], ["--batch", "8", "--out", str(out)]):
        assert main(["export", str(tiny_run), "--format", "hf", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fgvc: ") and err.count("\n") == 1 and "Traceback" not in err
    assert (other / "notes.txt").read_text() == "mine" and sorted(os.listdir(other)) == ["notes.txt"]


def test_a_folder_that_does_not_reproduce_the_logits_is_refused_and_the_old_one_kept(tiny_run, tmp_path,
                                                                                     monkeypatch):
    out = export.export_model(tiny_run, "hf", out=tmp_path / "hf")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = export_hf.twin

    def dropped_head(model, size):  # what a wrong key map does: the head never reaches the file
        arch, args, state = real(model, size)
        state["fc.weight"] = torch.zeros_like(state["fc.weight"])
        return arch, args, state

    monkeypatch.setattr(export_hf, "twin", dropped_head)
    with pytest.raises(UserError, match="differs from fgvc's"):
        export.export_model(tiny_run, "hf", out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temp folder left behind
