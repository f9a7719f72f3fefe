"""model.output_stride: the last stages dilate instead of striding, with the same weights.

The check is the identity of the "a trous" algorithm: a network whose stride-2 convolution became stride 1
and whose later convolutions dilate by 2 computes, on every second location, exactly the map the strided
network computes. With symmetric padding (torchvision, timm's ResNets) those are the even locations; with
TensorFlow's 'SAME' padding, which pads a stride-2 convolution after the image only, the odd ones.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from fgvc import api, config, export, runs
from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.models.factory import create_model
from fgvc.models.tflite import model_strides
from fgvc.models.weights import load_weights_file
from fgvc.train import train

WEIGHTS = Path(os.environ.get("FGVC_WEIGHTS") or "/nonexistent")
IMAGENET = WEIGHTS / "mobilenet_v2_1.0_224_quant.tflite"


def _last_map(model, x):
    seen = {}
    handle = model.feature_module.register_forward_hook(lambda m, i, out: seen.setdefault("map", out))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["map"]


def _random_statistics(model):
    """Non-trivial BatchNorm statistics (fresh ones are the identity, which hides a misplaced location)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("name, stride, first, step", [
    ("resnet50", 16, 0, 2), ("resnet50", 8, 0, 4),  # torchvision: replace_stride_with_dilation
    ("test_resnet", 16, 0, 2),  # timm: output_stride
    ("tf_mobilenetv2_100", 16, 1, 2),  # TensorFlow 'SAME' padding: the odd locations
])
def test_the_dilated_map_on_the_stride_grid_is_the_strided_map(name, stride, first, step):
    torch.manual_seed(0)
    strided = create_model(name, 5)
    _random_statistics(strided)
    dilated = create_model(name, 5, output_stride=stride)
    dilated.load_state_dict(strided.state_dict(), strict=True)  # the same parameters: nothing new to learn
    assert dilated.output_stride == stride
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)  # float64: no kernel's rounding hides or fakes a difference
    coarse, fine = _last_map(strided.double().eval(), x), _last_map(dilated.double().eval(), x)
    assert fine.shape[-1] == 64 // stride == coarse.shape[-1] * step
    assert torch.allclose(fine[..., first::step, first::step], coarse, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(fine[..., 1 - first::step, 1 - first::step], coarse, atol=1e-3)  # the grid matters


def test_strides_past_the_output_stride_become_ones():
    two, one = (2, 2), (1, 1)
    file = [two, one, two, two, one, two, two, one]
    assert model_strides(file) == file
    assert model_strides(file, 16) == [two, one, two, two, one, two, one, one]  # 2 x 2 x 2 x 2 = 16, then ones
    assert model_strides(file, 8) == [two, one, two, two, one, one, one, one]


@pytest.mark.skipif(not IMAGENET.is_file(), reason="FGVC_WEIGHTS does not name the folder of the TensorFlow Lite files")
def test_tensorflow_lite_weights_load_into_a_dilated_mobilenet():
    strided, dilated = create_model("tf_mobilenetv2_100", 1001), create_model("tf_mobilenetv2_100", 1001,
                                                                              output_stride=16)
    load_weights_file(strided, IMAGENET)
    load_weights_file(dilated, IMAGENET)
    a, b = strided.state_dict(), dilated.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(1, 3, 224, 224)
    assert torch.allclose(_last_map(dilated.eval(), x)[..., 1::2, 1::2], _last_map(strided.eval(), x), atol=1e-4)


@pytest.mark.parametrize("name, stride, words", [
    ("test_resnet", 12, "8, 16 or 32"), ("resnet18", 16, "resnet18.tv_in1k"),
    ("vit_b_16", 16, "vision transformer"), ("densenet121", 16, "cannot dilate"),
])
def test_an_output_stride_a_model_cannot_take_is_one_sentence(name, stride, words):
    with pytest.raises(UserError, match=words):
        cfg = config.load(None, [f"model.name={name}", f"model.output_stride={stride}"])
        api.build_model(cfg, 4)


def test_a_timm_family_that_swallows_output_stride_is_refused(monkeypatch):
    # a family may take output_stride through **kwargs and keep its strides: its feature_info tells
    import timm

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, output_stride=32, **k: create(*a, **k))
    with pytest.raises(UserError, match="cannot dilate"):
        create_model("test_resnet", 4, output_stride=16)


def test_a_bad_output_stride_on_the_command_line_exits_2_and_writes_nothing(tiny_synthbirds_root, tmp_path, capsys):
    code = main(["train", "model.name=test_resnet", "model.output_stride=12", "data.name=synthbirds",
                 f"data.root={tiny_synthbirds_root}", f"out={tmp_path / 'runs'}"])
    assert code == 2 and "model.output_stride" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def stride16_run(tiny_synthbirds_root, tmp_path_factory):
    cfg = config.load(None, ["model.name=test_resnet", "model.output_stride=16", "method.name=isqrt_cov",
                             "method.isqrt_dim=8", "data.image_size=32", "train.epochs=1", "train.batch_size=16",
                             "data.num_workers=0", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                             f"out={tmp_path_factory.mktemp('stride16')}"])
    return train(cfg, progress=False)


def test_a_run_records_and_reloads_its_output_stride(stride16_run):
    protocol = json.loads((stride16_run / "metrics.json").read_text())["protocol"]
    assert protocol["output_stride"] == 16 and runs.load_config(stride16_run).model.output_stride == 16
    model, _ = api.load(stride16_run)  # the method's head on the stride-16 map it trained on
    assert model.method == "isqrt_cov" and model.output_stride == 16
    assert _last_map(model, torch.rand(1, 3, 32, 32)).shape[-1] == 2


def test_the_hf_export_passes_the_output_stride_to_timm(stride16_run, tmp_path):
    import timm

    run = tmp_path / "plain16"  # the run's folder, trained as a plain head (timm folders hold no method's head)
    run.mkdir()
    for f in ("classes.json", "metrics.json"):
        (run / f).write_bytes((stride16_run / f).read_bytes())
    cfg = runs.load_config(stride16_run)
    cfg.method = type(cfg.method)()
    (run / "config.yaml").write_text(config.dump(cfg))
    torch.manual_seed(0)
    model = create_model("test_resnet", 4, image_size=32, output_stride=16)
    _random_statistics(model)
    runs.save_weights(model.state_dict(), run / "checkpoints" / "best.safetensors")
    out = export.export_model(run, "hf", out=tmp_path / "hf")  # checks timm's logits against fgvc's itself
    assert json.loads((out / "config.json").read_text())["model_args"]["output_stride"] == 16
    net = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(model.normalize(x)), model.eval()(x), atol=1e-4)


@pytest.mark.parametrize("stride", [16, 8])
def test_the_hf_model_cards_torchvision_snippet_builds_the_dilated_resnet(stride16_run, tmp_path, monkeypatch,
                                                                          stride):
    import re

    run = tmp_path / "resnet50"  # the run's folder with a torchvision ResNet-50 at this stride, plain head
    run.mkdir()
    for f in ("classes.json", "metrics.json"):
        (run / f).write_bytes((stride16_run / f).read_bytes())
    cfg = runs.load_config(stride16_run)
    cfg.method, cfg.model.name, cfg.model.output_stride = type(cfg.method)(), "resnet50", stride
    (run / "config.yaml").write_text(config.dump(cfg))
    torch.manual_seed(0)
    model = create_model("resnet50", 4, image_size=32, output_stride=stride)
    _random_statistics(model)
    runs.save_weights(model.state_dict(), run / "checkpoints" / "best.safetensors")
    out = export.export_model(run, "hf", out=tmp_path / "hf")
    card = (out / "README.md").read_text()
    assert f"| `model.output_stride` | {stride} |" in card  # the recipe says so too
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", card, re.S) if "torchvision.models" in b)
    monkeypatch.chdir(out)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # the card's network, without timm
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # a strided ResNet takes the same tensors and gives other logits
        assert torch.allclose(scope["model"](model.normalize(x)), model.eval()(x), atol=1e-4)
