"""Methods wired into training, loading and the analyses: each test fails when its wiring is cut."""

import json

import pytest
import torch

from fgvc import api, config, runs
from fgvc.api import build_model
from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.train import train

# train.threads=fixed: runs compared bit for bit keep one thread count (beside other jobs auto would change it)
FAST = ["model.name=test_resnet", "data.image_size=64", "train.batch_size=16", "train.lr=2e-3", "train.patience=0",
        "data.num_workers=0", "train.precision=32-true", "data.name=synthbirds", "train.threads=fixed"]
WSDAN = ["method.name=wsdan", "method.attention_maps=4"]


def _cfg(root, out, *extra):
    return config.load(None, [*FAST, f"data.root={root}", f"out={out}", *extra])


@pytest.fixture(scope="module")
def wsdan_run(tiny_synthbirds_root, tmp_path_factory):
    return train(_cfg(tiny_synthbirds_root, tmp_path_factory.mktemp("wsdan"), "train.epochs=2", *WSDAN),
                 progress=False)


def test_the_loop_trains_with_the_methods_own_step(wsdan_run):
    # only WS-DAN's training step moves the class centres; a plain step (CE on forward) leaves them at zero
    state = runs.load_weights(wsdan_run / "checkpoints" / "last.safetensors")
    centers = state["net.fc.centers"]
    assert (centers.abs().sum(1) > 0).all()


def test_config_protocol_and_report_name_the_method(wsdan_run, tmp_path):
    assert config.load(wsdan_run / "config.yaml").method.name == "wsdan"
    protocol = json.loads((wsdan_run / "metrics.json").read_text())["protocol"]
    assert protocol["method"]["name"] == "wsdan" and protocol["method"]["attention_maps"] == 4
    assert protocol["method"]["crop_threshold"] == [0.4, 0.6]
    assert main(["report", str(wsdan_run.parent), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| wsdan |" in text and "wsdan (attention_maps=4" in text


def test_a_trained_method_run_reloads_to_identical_logits(wsdan_run):
    model, names = api.load(wsdan_run)
    cfg = config.load(wsdan_run / "config.yaml")
    built = build_model(cfg, len(names))
    built.load_state_dict(runs.load_weights(wsdan_run / "checkpoints" / "best.safetensors"))
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():  # the loaded model may run channels-last (as it trained): the same up to rounding
        assert torch.allclose(model(x), built.eval()(x), atol=1e-5)
    assert model.method == "wsdan" and model.head_module.centers.abs().sum() > 0


def test_eval_scores_the_method_run_as_training_did(wsdan_run, capsys):
    assert main(["eval", str(wsdan_run), "--json", "--tta", "flip"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((wsdan_run / "metrics.json").read_text())
    assert result["acc"] == pytest.approx(metrics["test_acc"])
    assert "tta" in result and "calibration" in result


def test_predict_attack_and_explain_work_on_a_method_run(wsdan_run, tiny_synthbirds_root, tmp_path, capsys):
    image = next(tiny_synthbirds_root.rglob("*.jpg"))
    assert main(["predict", str(wsdan_run), str(image), "--json"]) == 0
    assert main(["attack", str(wsdan_run), "--eps", "0,0.03", "--limit", "4"]) == 0
    out = tmp_path / "explain"
    assert main(["explain", str(wsdan_run), "--method", "gradcam,attention", "--limit", "2",
                 "--out", str(out), "--save-maps"]) == 0
    from safetensors.torch import load_file

    maps = load_file(out / "maps.safetensors")
    for name in ("maps.gradcam", "maps.attention"):
        assert maps[name].shape == (2, 64, 64) and 0 <= maps[name].min() and maps[name].max() <= 1
    capsys.readouterr()
    assert main(["explain", str(wsdan_run), "--method", "cam", "--limit", "1", "--out", str(tmp_path / "c")]) == 2
    assert "method.name=wsdan" in capsys.readouterr().err


def test_explain_attention_draws_the_runs_own_mean_attention_map(wsdan_run, tmp_path):
    # `fgvc explain --method attention` draws the run's model's attention (fgvc.explain.attention, checked
    # against its definition in test_attention.py), not another method's map of the same shape
    from safetensors.torch import load_file

    from fgvc.explain import explain

    out = tmp_path / "explain"
    assert main(["explain", str(wsdan_run), "--method", "attention,gradcam", "--limit", "2", "--out", str(out),
                 "--save-maps", "--precision", "32-true", "--device", "cpu"]) == 0
    saved = load_file(out / "maps.safetensors")
    model, _ = api.load(wsdan_run)
    expected = explain(model.eval(), saved["images"], "attention")
    assert torch.allclose(saved["maps.attention"], expected, atol=1e-5)
    assert not torch.allclose(saved["maps.gradcam"], expected, atol=1e-2)


def test_onnx_export_of_a_method_run_equals_pytorch(wsdan_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from fgvc.export import export_model, load_onnx

    path = export_model(wsdan_run, "onnx", tmp_path / "model.onnx")
    model, _ = api.load(wsdan_run)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_onnx(path)(x), model(x), atol=1e-4)
    with pytest.raises(UserError, match="method.name=wsdan.*onnx, pt2 or torchscript"):
        export_model(wsdan_run, "hf", tmp_path / "hf")


def test_torchscript_export_of_a_method_run_equals_pytorch(wsdan_run, tmp_path):
    """The hf refusal offers TorchScript too: it holds WS-DAN's crop-and-average inference."""
    from fgvc.export import export_model, load_torchscript

    path = export_model(wsdan_run, "torchscript", tmp_path / "model.pt")
    model, _ = api.load(wsdan_run)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_torchscript(path)(x), model(x), atol=1e-5)


def test_a_resumed_method_run_ends_where_an_uninterrupted_one_does(tiny_synthbirds_root, tmp_path):
    extra = ["train.epochs=3", *WSDAN, "aug.geometric=true"]
    full = train(_cfg(tiny_synthbirds_root, tmp_path / "full", *extra), progress=False)
    part = train(_cfg(tiny_synthbirds_root, tmp_path / "part", "train.epochs=2", *extra[1:]), progress=False)
    (part / "metrics.json").unlink()
    (part / "config.yaml").write_text(config.dump(_cfg(tiny_synthbirds_root, tmp_path / "part", *extra)))
    resumed = train(runs.load_config(part), run_dir=part, resume=True, progress=False)
    a = runs.load_weights(full / "checkpoints" / "last.safetensors")
    b = runs.load_weights(resumed / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # centres included


def test_second_order_run_builds_its_head_and_trains_a_frozen_backbone(tiny_synthbirds_root, tmp_path):
    run = train(_cfg(tiny_synthbirds_root, tmp_path, "train.epochs=1", "method.name=isqrt_cov",
                     "method.isqrt_dim=8", "model.trainable=fc"), progress=False)
    state = runs.load_weights(run / "checkpoints" / "best.safetensors")
    assert state["net.fc.fc.weight"].shape == (4, 36) and "net.fc.reduce.0.weight" in state
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params_trainable"] < metrics["params_total"]


@pytest.mark.parametrize("extra, words", [
    (["aug.mixup_alpha=0.2"], "cannot train with aug.mixup_alpha"),
    (["adv.attack=fgsm"], "cannot train adversarially"),
    (["train.devices=2", "train.accelerator=cpu"], "cannot train on 2 devices"),
    (["method.name=bilinear", "method.attention_maps=8"], "method.attention_maps=8 is a setting of wsdan and cal"),
    (["method.name=bilinear", "model.name=test_vit", "data.image_size=32"], "no spatial feature map"),
    # WS-DAN and CAL score several views per step through one head: loss.center would pair a view's logits with
    # another view's features (WS-DAN) or find none (CAL) -- they keep their own centre loss
    (["loss.center=0.1"], "method.name=wsdan cannot train with loss.center=0.1.*method.center_weight"),
    (["method.name=cal", "loss.center=0.1"], "method.name=cal cannot train with loss.center=0.1.*method.center_weight"),
])
def test_what_a_method_cannot_take_is_refused_before_anything_is_written(tiny_synthbirds_root, tmp_path, extra,
                                                                        words):
    cfg = _cfg(tiny_synthbirds_root, tmp_path / "out", *WSDAN[:1], *extra)
    with pytest.raises(UserError, match=words):
        train(cfg, progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["wsdan", "cal"])
def test_a_run_whose_attention_diverges_ends_in_the_loops_sentence(name, tiny_synthbirds_root, tmp_path, monkeypatch,
                                                                  capsys):
    from fgvc.methods import wsdan

    built = wsdan.AttentionHead.__init__

    def diverging(self, *args, **kwargs):  # training passes see nan attention maps, as a diverged network's
        built(self, *args, **kwargs)
        self.attention.register_forward_hook(lambda module, inputs, out: out * float("nan") if module.training
                                             else out)

    monkeypatch.setattr(wsdan.AttentionHead, "__init__", diverging)
    out = tmp_path / "runs"
    assert main(["train", *FAST, f"data.root={tiny_synthbirds_root}", f"out={out}", "train.epochs=1",
                 f"method.name={name}", "method.attention_maps=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the training loss became nan at epoch 1 step 1; lower train.lr" in err, err
    assert not list(out.glob("*/checkpoints/*.safetensors"))  # no weights of the diverged step


def test_resume_cannot_change_the_method(wsdan_run):
    cfg = config.load(wsdan_run / "config.yaml", ["method.name=cal"])
    with pytest.raises(UserError, match="method.name=cal"):
        train(cfg, run_dir=wsdan_run, resume=True, progress=False)


def test_a_methods_training_step_runs_under_the_runs_autocast(tiny_synthbirds_root, tmp_path, monkeypatch):
    # WS-DAN's passes bypass the Fabric wrapper that autocasts plain forwards: the loop must autocast them
    from fgvc.methods import wsdan

    seen = []
    step = wsdan.Method.train_loss

    def spy(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(wsdan.Method, "train_loss", spy)
    train(_cfg(tiny_synthbirds_root, tmp_path, "train.epochs=1", *WSDAN, "train.precision=bf16-mixed"),
          progress=False)
    assert seen and all(seen)


def test_the_web_demo_predicts_explains_and_attacks_a_method_run(wsdan_run, tiny_synthbirds_root):
    pytest.importorskip("fastapi")
    from fgvc.serve.predictor import Predictor

    predictor = Predictor(wsdan_run)
    data = next(tiny_synthbirds_root.rglob("*.jpg")).read_bytes()
    assert len(predictor.predict(data)["top"]) == 4
    assert predictor.explain(data)["cam_method"] == "gradcam"  # Grad-CAM on the backbone's first pass
    attacked = predictor.attack(data, 4 / 255)  # eps in [0, 1], as fgvc attack --eps
    assert 0 < attacked["linf_255"] <= 4.0 + 1e-3 and len(attacked["top_adv"]) == 4


def test_a_weights_file_initialises_the_backbone_under_a_methods_head(tiny_synthbirds_root, tmp_path):
    from safetensors.torch import save_file

    from fgvc.models import create_model

    torch.manual_seed(5)
    source = create_model("test_resnet", 4)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = _cfg(tiny_synthbirds_root, tmp_path, "method.name=bilinear", "method.bilinear_dim=4",
               f"model.weights={path}")
    model = build_model(cfg, 4)
    assert model.method == "bilinear"
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith("net.fc.")}
    state = model.state_dict()
    assert backbone and all(torch.equal(state[k], v) for k, v in backbone.items())
