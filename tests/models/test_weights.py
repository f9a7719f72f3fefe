"""model.weights: local files in every usual wrapping, head replacement, the sentences for files
that do not fit, pickles that would run code, and the origin recorded with the run."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from fgvc.errors import UserError
from fgvc.models.factory import create_model
from fgvc.models.weights import load_weights_file, read_state_dict, sha256_file


def _resnet(classes=5):
    torch.manual_seed(0)
    return create_model("resnet18", classes)


def _torchvision_keys(model) -> dict:
    """The state a torchvision resnet18 file holds: its head is plain ``fc``, not fgvc's ``fc.1``."""
    state = {k.replace("fc.1.", "fc."): v.clone() for k, v in model.net.state_dict().items()}
    return state


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix", "nested", "compiled"])
def test_pth_wrappings_are_undone(tmp_path, wrap):
    src = _resnet(7)
    state = _torchvision_keys(src)
    obj = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer": {}},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "nested": {"state_dict": {"model": state}},
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    dst = _resnet(7)
    origin = load_weights_file(dst, path)
    assert origin["head"] == "loaded" and origin["sha256"] == sha256_file(path)
    for k, v in src.net.state_dict().items():
        assert torch.equal(dst.net.state_dict()[k], v), k


def test_safetensors_file_and_head_replaced_when_class_count_differs(tmp_path):
    src = _resnet(1000)
    path = tmp_path / "imagenet.safetensors"
    save_file(_torchvision_keys(src), str(path))
    dst = _resnet(5)
    origin = load_weights_file(dst, path)
    assert origin["head"] == "replaced"
    assert torch.equal(dst.net.conv1.weight, src.net.conv1.weight)  # the backbone came from the file
    assert dst.head.weight.shape == (5, 512)
    assert torch.count_nonzero(dst.head.weight) == 0  # a new head starts at zero (BiT)


def test_fgvc_checkpoint_carries_its_normalisation(tmp_path):
    src = _resnet(5)
    src.normalize.mean.fill_(0.5)
    src.normalize.std.fill_(0.25)
    path = tmp_path / "best.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = _resnet(5)
    load_weights_file(dst, path)
    assert torch.all(dst.normalize.mean == 0.5) and torch.all(dst.normalize.std == 0.25)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(dst.eval()(x), src.eval()(x))


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path):
    other = create_model("resnet34", 5)
    path = tmp_path / "r34.safetensors"
    save_file({k: v.contiguous() for k, v in other.net.state_dict().items()}, str(path))
    with pytest.raises(UserError) as e:
        load_weights_file(_resnet(5), path)
    text = str(e.value)
    assert "does not fit resnet18" in text and "unexpected layer1.2." in text and str(path) in text


def test_wrong_shape_is_one_sentence(tmp_path):
    state = _torchvision_keys(_resnet(5))
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(UserError, match=r"conv1.weight has shape \(64, 3, 5, 5\) where the model has \(64, 3, 7, 7\)"):
        load_weights_file(_resnet(5), path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_that_would_run_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"conv1.weight": _RunsCode()}}, f)
    with pytest.raises(UserError, match="refused"):
        read_state_dict(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_missing_file_unknown_suffix_and_changed_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_weights_file(_resnet(), tmp_path / "nope.pth")
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"x")
    with pytest.raises(UserError, match="suffix '.npz'"):
        load_weights_file(_resnet(), odd)
    path = tmp_path / "w.safetensors"
    save_file(_torchvision_keys(_resnet(5)), str(path))
    with pytest.raises(UserError, match="sha256"):
        load_weights_file(_resnet(5), path, expected_sha256="0" * 64)
    with pytest.raises(UserError, match="environment variable"):
        load_weights_file(_resnet(5), "$FGVC_NOT_SET_ANYWHERE/w.safetensors")


def test_training_from_a_file_records_its_origin(tmp_path, tiny_synthbirds_root):
    from fgvc import api, runs
    from fgvc import config as config_mod
    from fgvc.train import train

    src = _resnet(1000)
    path = tmp_path / "resnet18-imagenet.safetensors"
    save_file(_torchvision_keys(src), str(path))
    cfg = config_mod.load(None, ["model.name=resnet18", f"model.weights={path}", "data.name=synthbirds",
                                 f"data.root={tiny_synthbirds_root}", "data.image_size=32", "train.epochs=1",
                                 "train.batch_size=8", "data.num_workers=0", "train.precision=32-true",
                                 "model.trainable=fc", f"out={tmp_path / 'runs'}"])
    run = train(cfg, progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pretrained"] == {"source": "file", "file": path.name, "sha256": sha256_file(path)}
    saved = runs.load_config(run)
    assert saved.model.weights_sha256 == sha256_file(path)
    assert metrics["batchnorm"] == "train"  # plain BatchNorm for weights that are not folded
    # the frozen backbone is the file's, bit for bit
    model, _ = api.load(run)
    assert torch.equal(model.net.conv1.weight, src.net.conv1.weight)
    # a later run that names another sha256 is refused before it trains
    cfg.model.weights_sha256 = "0" * 64
    with pytest.raises(UserError, match="sha256"):
        train(cfg, progress=False)


def test_a_timm_vit_file_made_for_another_image_size_is_resampled_as_timm_does(tmp_path, tiny_synthbirds_root):
    import timm

    from fgvc import config
    from fgvc.train import train

    torch.manual_seed(0)
    src = timm.create_model("test_vit", num_classes=4)  # 160 px: a 10 x 10 grid of 16-px patches
    path = tmp_path / "vit_160.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = create_model("test_vit", 4, image_size=64)
    assert load_weights_file(dst, path)["head"] == "loaded"
    # timm itself loading the same file into the model built for 64 px (its checkpoint filter resamples)
    ref = timm.create_model("test_vit", num_classes=4, img_size=64, pretrained=True,
                            pretrained_cfg_overlay={"file": str(path), "num_classes": 4})
    assert dst.net.pos_embed.shape == ref.pos_embed.shape == (1, 1 + 4 * 4, src.pos_embed.shape[-1])
    for k, v in ref.state_dict().items():
        assert torch.equal(dst.net.state_dict()[k], v), k
    run = train(config.load(None, ["model.name=test_vit", f"model.weights={path}", "data.image_size=64",
                                   "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", "train.epochs=1",
                                   "data.num_workers=0", f"out={tmp_path / 'runs'}"]), progress=False)
    assert json.loads((run / "metrics.json").read_text())["pretrained"]["file"] == "vit_160.safetensors"


@pytest.mark.slow  # two ViT-B/16 (86 M parameters each) and a 330 MB file
def test_a_torchvision_vit_file_made_for_224_px_is_resampled_as_torchvision_does(tmp_path):
    from torchvision.models import vit_b_16
    from torchvision.models.vision_transformer import interpolate_embeddings

    torch.manual_seed(0)
    state = vit_b_16().state_dict()  # torchvision's own names and head (heads.head)
    path = tmp_path / "vit_b_16_224.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    dst = create_model("vit_b_16", 1000, image_size=64)
    assert load_weights_file(dst, path)["head"] == "loaded"
    expected = interpolate_embeddings(64, 16, state)["encoder.pos_embedding"]
    assert dst.net.encoder.pos_embedding.shape == (1, 17, 768)
    assert torch.equal(dst.net.encoder.pos_embedding, expected)


def test_an_unset_variable_in_the_path_names_the_variable_and_where_the_files_come_from(monkeypatch):
    # study files name $FGVC_WEIGHTS/...: a new user without it set learns what to set and where the files are
    monkeypatch.delenv("FGVC_WEIGHTS", raising=False)
    model = create_model("test_resnet", 3)
    with pytest.raises(UserError, match=r"environment variable that is not set.*FGVC_WEIGHTS=DIR.*docs/weights.md"):
        load_weights_file(model, "$FGVC_WEIGHTS/mobilenet_v2_1.0_224_quant.tflite")
