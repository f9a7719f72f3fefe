"""TensorFlow Lite import: 'SAME' padding against TensorFlow's closed form, the port against an
independent float execution of the graph and against the official LiteRT interpreter on real
photographs, the folded BatchNorm, and the imported normalisation honoured downstream.

The real files (MobileNetV2, published by the Coral project in github.com/google-coral/test_data)
are found through FGVC_WEIGHTS (their folder) and birds50 through FGVC_BIRDS50; the tests that need
them skip with the reason when these are not set.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from fgvc.errors import UserError
from fgvc.models import apply_trainable, train_mode
from fgvc.models.batchnorm import reestimate_statistics
from fgvc.models.factory import create_model
from fgvc.models.tflite import num_classes, reference_forward, same_padding
from fgvc.models.weights import load_weights_file

WEIGHTS = Path(os.environ.get("FGVC_WEIGHTS") or "/nonexistent")
IMAGENET = WEIGHTS / "mobilenet_v2_1.0_224_quant.tflite"
BIRDS = WEIGHTS / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
BIRDS50 = Path(os.environ.get("FGVC_BIRDS50") or "/nonexistent") / "CUB_200_2011" / "images"
needs_weights = pytest.mark.skipif(not IMAGENET.is_file(), reason="FGVC_WEIGHTS does not name the folder of the "
                                                                  "TensorFlow Lite files")


@pytest.mark.parametrize("size", [7, 8, 15, 16, 224, 225])
@pytest.mark.parametrize("kernel,stride", [(1, 1), (3, 1), (3, 2), (1, 2), (5, 2)])
def test_same_padding_is_tensorflows_closed_form_and_timms(size, kernel, stride):
    # TensorFlow's documented rule: output ceil(size / stride); the odd pixel of padding goes after
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    left, right, top, bottom = same_padding(size, size, (kernel, kernel), (stride, stride))
    assert (left, right) == (top, bottom) == (total // 2, total - total // 2)
    # timm's 'same' convolution (what tf_mobilenetv2_100 is built of) computes the same thing
    torch.manual_seed(0)
    conv = timm.layers.create_conv2d(4, 6, kernel, stride=stride, padding="same")
    x = torch.randn(1, 4, size, size)
    ref = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, stride=stride)
    assert conv(x).shape[-1] == out
    assert torch.allclose(conv(x), ref, atol=1e-5)


def test_folded_batchnorm_reestimated_keeps_the_eval_function_and_fixes_train_mode():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 1), torch.nn.BatchNorm2d(4))
    for bn in (net[1], net[4]):  # folded, as the import leaves it: identity statistics, bias = beta
        bn.running_var.fill_(1 - bn.eps)
        bn.bias.data.uniform_(-1, 1)
    data = [torch.rand(16, 3, 12, 12) * 3 + 1 for _ in range(4)]
    net.eval()
    with torch.no_grad():
        before = net(data[0]).clone()
        train_before = copy.deepcopy(net).train()(data[0])  # a copy: a train forward moves the statistics
    reestimate_statistics(net, data)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(data[0]), before, atol=1e-4)  # the function is unchanged
        # the running statistics are the measured moments of the first BatchNorm's input
        x = net[0](torch.cat(data))
        assert torch.allclose(net[1].running_mean, x.mean((0, 2, 3)), atol=1e-4)
        assert torch.allclose(net[1].running_var, x.var((0, 2, 3)), rtol=1e-3)
        train_after = copy.deepcopy(net).train()(data[0])
    # a train-mode forward now agrees with eval mode; with placeholder statistics it did not
    assert (train_after - before).abs().mean() < 0.1 * (train_before - before).abs().mean()


def test_frozen_batchnorm_keeps_its_statistics_while_training():
    from types import SimpleNamespace

    from fgvc.models.batchnorm import prepare_batchnorm

    model = create_model("tf_mobilenetv2_100", 3)
    cfg = SimpleNamespace(model=SimpleNamespace(batchnorm="frozen"), train=SimpleNamespace(seed=0))
    assert prepare_batchnorm(model, cfg, make_dataset=None) == "frozen"
    before = model.net.bn1.running_mean.clone()
    train_mode(model)
    model(torch.rand(4, 3, 32, 32))
    assert not model.net.bn1.training and torch.equal(model.net.bn1.running_mean, before)
    cfg.model.batchnorm = "train"
    model = create_model("tf_mobilenetv2_100", 3)
    assert prepare_batchnorm(model, cfg, make_dataset=None) == "train"
    train_mode(model)
    model(torch.rand(4, 3, 32, 32))
    assert not torch.equal(model.net.bn1.running_mean, before)


def test_trainable_stages_of_a_mobilenet():
    model = create_model("tf_mobilenetv2_100", 5)
    apply_trainable(model, "head+blocks:2")
    trainable = {n.split(".")[1] + ("." + n.split(".")[2] if n.startswith("net.blocks") else "")
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.5", "blocks.6", "conv_head", "bn2", "classifier"}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    frozen = model.net.blocks[4][0].conv_pw.weight.clone()
    train_mode(model)
    model(torch.rand(4, 3, 32, 32)).sum().backward()
    opt.step()
    assert torch.equal(model.net.blocks[4][0].conv_pw.weight, frozen)  # a frozen stage does not move
    with pytest.raises(UserError, match="has 7 blocks"):
        apply_trainable(model, "head+blocks:8")


def _photos(n: int, size: int = 224) -> torch.Tensor:
    if BIRDS50.is_dir():
        files = sorted(BIRDS50.glob("*/*.jpg"))[:: max(1, len(list(BIRDS50.glob("*/*.jpg"))) // n)][:n]
        images = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    else:  # smooth random images: still a fair comparison of two executions of one graph
        g = torch.Generator().manual_seed(0)
        small = torch.rand(n, 3, 8, 8, generator=g)
        return F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@needs_weights
@pytest.mark.parametrize("path", [IMAGENET, BIRDS], ids=["imagenet", "inat_birds"])
def test_port_equals_the_float_graph_and_agrees_with_litert(path):
    model = create_model("tf_mobilenetv2_100", num_classes(path))
    origin = load_weights_file(model, path)
    assert origin["folded_batchnorm"] and origin["head"] == "loaded"
    model.eval()
    x = _photos(12)
    with torch.no_grad():
        logits = model(x)
        features = model.net.forward_head(model.net.forward_features(model.normalize(x)), pre_logits=True)
    ref_logits = reference_forward(path, x)
    ref_features = reference_forward(path, x, until="features")
    assert torch.allclose(features, ref_features, atol=1e-4, rtol=1e-4)
    assert torch.equal(logits.argmax(1), ref_logits.argmax(1))
    # the input normalisation came from the file's quantisation: (x - 128/255) / (128/255)
    assert torch.allclose(model.normalize.mean, torch.full((1, 3, 1, 1), 128 / 255))
    assert torch.allclose(model.normalize.std, torch.full((1, 3, 1, 1), 128 / 255))
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    interpreter = interpreter_mod.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    agree = 0
    for i in range(len(x)):
        pixels = np.round(x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[None]
        interpreter.set_tensor(inp["index"], pixels)
        interpreter.invoke()
        agree += int(interpreter.get_tensor(out["index"])[0].argmax() == logits[i].argmax())
    # 8-bit activations move a few close calls (about 90-96% agreement on birds50)
    assert agree >= 0.75 * len(x)


@needs_weights
def test_tflite_weights_refuse_a_model_without_same_padding():
    with pytest.raises(UserError, match="tf_mobilenetv2_100"):
        load_weights_file(create_model("mobilenetv2_100", 10), IMAGENET)
    with pytest.raises(UserError, match="convolution conv_stem of tf_mobilenetv2_140"):
        load_weights_file(create_model("tf_mobilenetv2_140", 10), IMAGENET)


@needs_weights
def test_imported_model_normalisation_is_honoured_by_predict_explain_attack_and_onnx(tmp_path, tiny_synthbirds_root):
    from fgvc import api
    from fgvc import config as config_mod
    from fgvc.explain import gradcam
    from fgvc.robust import fgsm
    from fgvc.train import train

    cfg = config_mod.load(None, ["model.name=tf_mobilenetv2_100", f"model.weights={IMAGENET}",
                                 "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", "data.image_size=32",
                                 "train.epochs=1", "train.batch_size=8", "data.num_workers=0",
                                 "train.precision=32-true", "model.trainable=head", f"out={tmp_path / 'runs'}"])
    run = train(cfg, progress=False)
    model, _ = api.load(run)
    # model.batchnorm=auto re-estimated the folded placeholder statistics (variance 1 - eps) on the images
    assert json.loads((run / "metrics.json").read_text())["batchnorm"] == "reestimate"
    assert not torch.allclose(model.net.bn1.running_var, torch.full_like(model.net.bn1.running_var, 1 - 1e-5))
    # every consumer loads the run through api.load: the file's normalisation travels in the checkpoint
    assert torch.allclose(model.normalize.mean, torch.full((1, 3, 1, 1), 128 / 255))
    x = torch.rand(2, 3, 32, 32)
    y = model(x).argmax(1)
    big = _photos(2)  # the graph's pooling is fixed to 224 px inputs
    with torch.no_grad():  # the frozen backbone is the file's: same pooled features as the float graph
        feats = model.net.forward_head(model.net.forward_features(model.normalize(big)), pre_logits=True)
    assert torch.allclose(feats, reference_forward(IMAGENET, big, until="features"), atol=1e-4, rtol=1e-4)
    maps = gradcam(model, x)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
    x_adv = fgsm(model, x, y, eps=4 / 255)
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6
    ort = pytest.importorskip("onnxruntime")
    from fgvc.export import export_model

    session = ort.InferenceSession(str(export_model(run, "onnx", tmp_path / "model.onnx")))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(got, model(x).numpy(), atol=1e-4)


@needs_weights
@pytest.mark.slow
@pytest.mark.skipif(not BIRDS50.is_dir(), reason="FGVC_BIRDS50 does not name the birds50 folder")
def test_a_short_fine_tune_from_imagenet_beats_the_same_run_from_scratch(tmp_path):
    """Opt-in (-m slow, about 10 minutes on a 2-core CPU): 2 epochs at 128 px on birds50."""
    from fgvc import config as config_mod
    from fgvc.train import train

    def top1(*extra):
        cfg = config_mod.load(None, ["model.name=tf_mobilenetv2_100", "data.name=cub200",
                                     f"data.root={BIRDS50.parents[1]}", "data.image_size=128", "train.epochs=2",
                                     "train.batch_size=32", "train.lr=5e-4", "train.patience=0",
                                     "train.channels_last=true", f"out={tmp_path}", *extra])
        run = train(cfg, progress=False)
        return json.loads((run / "metrics.json").read_text())["test_acc"]

    pretrained, scratch = top1(f"model.weights={IMAGENET}"), top1()
    assert pretrained > scratch + 0.3, (pretrained, scratch)


def test_cam_on_a_mobilenet_weighs_the_pooled_map_by_the_head():
    from fgvc.explain import cam

    torch.manual_seed(0)
    model = create_model("tf_mobilenetv2_100", 5).eval()
    x = torch.rand(2, 3, 64, 64)
    maps = cam(model, x)
    # closed form: CAM_k = sum_c w_kc A_c on the map that is pooled into the head (bn2, 1280 channels)
    feats = {}
    handle = model.net.bn2.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    with torch.no_grad():
        k = model(x).argmax(1)
    handle.remove()
    a = feats["a"]
    assert a.shape[1] == model.head.in_features
    raw = torch.einsum("bc,bchw->bhw", model.head.weight[k], a)
    raw = F.interpolate(raw[:, None], size=64, mode="bilinear", align_corners=False)[:, 0]
    lo, hi = raw.amin((1, 2), keepdim=True), raw.amax((1, 2), keepdim=True)
    assert torch.allclose(maps, (raw - lo) / (hi - lo), atol=1e-4)


@needs_weights
def test_weights_import_writes_safetensors_that_fgvc_and_timm_load_alike(tmp_path, capsys):
    from fgvc.cli import main

    assert main(["weights", "import", str(IMAGENET), "--out", str(tmp_path),
                 "--labels", str(WEIGHTS / "imagenet_labels.txt")]) == 0
    out = tmp_path / "mobilenet_v2_1.0_224_quant.safetensors"
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["num_classes"] == 1001 and len(info["labels"]) == 1001 and info["timm_kwargs"] == {"pad_type": "same"}
    assert info["max_abs_logit_difference_to_the_float_graph"] < 1e-3
    x = _photos(2)
    from_tflite, from_import = create_model("tf_mobilenetv2_100", 1001), create_model("tf_mobilenetv2_100", 1001)
    load_weights_file(from_tflite, IMAGENET)
    origin = load_weights_file(from_import, out)
    assert origin["folded_batchnorm"]  # the metadata keeps the mark, so model.batchnorm=auto re-estimates
    plain = timm.create_model("mobilenetv2_100", pad_type="same", num_classes=1001, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(out), num_classes=1001)).eval()
    with torch.no_grad():
        ref = from_tflite.eval()(x)
        assert torch.allclose(from_import.eval()(x), ref, atol=1e-5)
        assert torch.allclose(plain((x - info["mean"][0]) / info["std"][0]), ref, atol=1e-4)
    assert main(["weights", "import", str(out), "--out", str(tmp_path)]) == 2  # not a .tflite: one sentence
    assert "need no import" in capsys.readouterr().err


@pytest.mark.parametrize("make", [lambda tmp: tmp / "missing.tflite", lambda tmp: tmp])
def test_a_missing_tflite_file_is_one_sentence(tmp_path, capsys, make):
    from fgvc.cli import main

    path = make(tmp_path)
    if path.is_dir():
        path = path / "folder.tflite"
        path.mkdir()
    assert main(["weights", "import", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
