import pytest
import torch

from fgvc.errors import UserError
from fgvc.models import count_parameters, create_model
from fgvc.models.factory import TORCHVISION_MODELS


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                  "resnext101_32x8d", "vit_b_16", "vit_l_16", "test_resnet", "test_vit"])
def test_every_named_backbone_gives_one_logit_per_class(name):
    size = 32
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, dropout=0.2, image_size=size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert model.head.out_features == 7


def test_normalisation_is_the_first_layer():
    model = create_model("resnet18", 3, image_size=32).eval()
    x = torch.rand(1, 3, 32, 32)
    manual = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(manual))


def test_dropout_sits_before_the_head():
    model = create_model("resnet18", 3, dropout=0.5)
    assert isinstance(model.net.fc[0], torch.nn.Dropout) and model.net.fc[0].p == 0.5


def test_unknown_model_suggests_a_name():
    with pytest.raises(UserError, match="resnet50"):
        create_model("resnet05", 3)


def test_pretrained_weights_come_from_torchvisions_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, weights = TORCHVISION_MODELS["resnet18"]
    reference = create_model("resnet18", 1000).net
    state = {k: v for k, v in reference.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = state.pop("fc.1.weight"), state.pop("fc.1.bias")
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / weights.url.rsplit("/", 1)[-1])
    model = create_model("resnet18", 5, pretrained=True)
    assert torch.equal(model.net.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.net.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert model.head.out_features == 5  # the ImageNet head is replaced
    # metrics.json's pretraining source names and hashes that very file (DESIGN: source and sha256)
    from fgvc import config
    from fgvc.api import pretraining_source
    from fgvc.models.weights import sha256_file

    cfg = config.apply(config.Config(), {"model.name": "resnet18", "model.pretrained": "true"})
    cached = cache / weights.url.rsplit("/", 1)[-1]
    assert pretraining_source(cfg) == {"source": "torchvision", "name": "resnet18", "file": cached.name,
                                       "sha256": sha256_file(cached)}
    cached.unlink()  # not cached (a run that read it elsewhere): no hash is claimed
    assert pretraining_source(cfg)["sha256"] is None


def test_pretrained_offline_and_not_cached_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"resnet18-f37072fd\.pth.*checkpoints"):
        create_model("resnet18", 5, pretrained=True)


def test_pretrained_vit_at_a_new_resolution_interpolates_positions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, weights = TORCHVISION_MODELS["vit_b_16"]
    torch.manual_seed(0)
    source = create_model("vit_b_16", 1000, image_size=224).net
    state = dict(source.state_dict())
    state["heads.head.weight"], state["heads.head.bias"] = state.pop("heads.1.weight"), state.pop("heads.1.bias")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1])
    model = create_model("vit_b_16", 4, pretrained=True, image_size=64)
    assert model.net.encoder.pos_embedding.shape == (1, 1 + 4 * 4, 768)
    # the class token's position is kept as is
    assert torch.equal(model.net.encoder.pos_embedding[:, 0], source.encoder.pos_embedding[:, 0])
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 4)


def test_parameter_counts_match_a_hand_count():
    model = create_model("resnet18", 10)
    counts = count_parameters(model)
    assert counts["params_total"] == 11_176_512 + 512 * 10 + 10  # torchvision resnet18 without its fc


def test_position_table_interpolated_to_the_original_size_is_unchanged():
    from torchvision.models.vision_transformer import interpolate_embeddings

    torch.manual_seed(0)
    state = create_model("vit_b_16", 3, image_size=64).net.state_dict()
    same = interpolate_embeddings(64, 16, dict(state))
    assert torch.equal(same["encoder.pos_embedding"], state["encoder.pos_embedding"])
    bigger = interpolate_embeddings(128, 16, dict(state))
    assert bigger["encoder.pos_embedding"].shape == (1, 1 + 8 * 8, 768)


def test_timm_vit_runs_at_a_resolution_other_than_its_default():
    model = create_model("test_vit", 4, image_size=96).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 96, 96)).shape == (1, 4)
