import json
from pathlib import Path

import open_clip
import open_clip.pretrained
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from PIL import Image
from safetensors.torch import save_file
from tinyclip import TINY_CFG, make_tiny_clip

from fgvc.clip.classifier import _wrap
from fgvc.clip.models import ClipImageEncoder, cached_weights, load_clip
from fgvc.errors import UserError

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache_file(cache: Path, repo_id: str, filename: str) -> Path:
    """Where huggingface_hub keeps ``filename`` of ``repo_id``: models--org--name/snapshots/<rev>/file."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    path = repo / "snapshots" / SNAPSHOT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_clip_from_a_weights_file(tmp_path, tiny_model_name):
    source = make_tiny_clip(seed=3)
    weights = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), weights)
    model, preprocess, tokenizer = load_clip(tiny_model_name, str(weights))
    assert same_weights(model, source)
    x = preprocess(Image.new("RGB", (50, 40), (255, 128, 0)))
    assert x.shape == (3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # no normalisation
    assert tokenizer(["a photo of a bird."]).shape == (1, 77)


def test_load_clip_finds_tag_weights_in_the_hf_cache_and_applies_quick_gelu(tmp_path, monkeypatch, tiny_model_name):
    tag = open_clip.pretrained._pcfg(hf_hub="fgvc-test/tiny-clip/", quick_gelu=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, tiny_model_name, {"tinytag": tag})
    source = make_tiny_clip(seed=4)
    save_file(source.state_dict(), hf_cache_file(tmp_path, "fgvc-test/tiny-clip", "open_clip_model.safetensors"))

    model, _, _ = load_clip(tiny_model_name, "tinytag", cache_dir=tmp_path, download=False)
    assert same_weights(model, source)
    assert any(isinstance(m, QuickGELU) for m in model.visual.modules())  # the tag was trained with QuickGELU
    encoder = ClipImageEncoder(model)
    assert torch.allclose(encoder.mean.flatten(), torch.tensor([0.5] * 3))  # the tag's mean/std, not defaults


def test_load_clip_finds_url_weights_in_the_clip_cache(tmp_path, monkeypatch, tiny_model_name):
    tag = open_clip.pretrained._pcfg(url="https://example.invalid/weights/tiny-url.pt")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, tiny_model_name, {"urltag": tag})
    monkeypatch.setattr(open_clip.pretrained, "_has_hf_hub", False)
    source = make_tiny_clip(seed=5)
    torch.save(source.state_dict(), tmp_path / "tiny-url.pt")
    model, _, _ = load_clip(tiny_model_name, "urltag", cache_dir=tmp_path, download=False)
    assert same_weights(model, source)


@pytest.mark.parametrize("name, tag, repo", [
    ("ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai"),
    ("ViT-B-16", "openai", "timm/vit_base_patch16_clip_224.openai"),
    ("ViT-L-14-336", "openai", "timm/vit_large_patch14_clip_336.openai"),
    ("ViT-B-32-quickgelu", "openai", "timm/vit_base_patch32_clip_224.openai"),
    ("ViT-g-14", "laion2b_s12b_b42k", "laion/CLIP-ViT-g-14-laion2B-s12B-b42K"),
])
def test_seed_models_are_looked_up_where_open_clip_downloads_them(tmp_path, name, tag, repo):
    assert cached_weights(name, tag, tmp_path) is None
    path = hf_cache_file(tmp_path, repo, "open_clip_model.safetensors")
    path.write_bytes(b"placeholder")
    assert Path(cached_weights(name, tag, tmp_path)) == path


def test_openai_weights_downloaded_by_url_are_found_too(tmp_path):
    (tmp_path / "ViT-B-16.pt").write_bytes(b"placeholder")  # open_clip's URL download keeps the file name
    assert Path(cached_weights("ViT-B-16", "openai", tmp_path)) == tmp_path / "ViT-B-16.pt"


def test_missing_weights_offline_is_one_user_error_naming_model_tag_and_cache(tmp_path):
    with pytest.raises(UserError) as e:
        load_clip("ViT-B-32", "openai", cache_dir=tmp_path, download=False)
    message = str(e.value)
    assert "'ViT-B-32'" in message and "'openai'" in message and str(tmp_path) in message
    assert "timm/vit_base_patch32_clip_224.openai" in message and str(tmp_path / "ViT-B-32.pt") in message


def test_failed_download_becomes_a_user_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(open_clip, "download_pretrained", no_network)
    with pytest.raises(UserError, match="laion2b_s12b_b42k.*download failed"):
        load_clip("ViT-g-14", "laion2b_s12b_b42k", cache_dir=tmp_path)


def test_hf_hub_name_loads_from_cache_or_fails_offline(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="hf-hub:fgvc-test/tiny-hub.*not cached"):
        load_clip("hf-hub:fgvc-test/tiny-hub", cache_dir=tmp_path, download=False)
    config = {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    hf_cache_file(tmp_path, "fgvc-test/tiny-hub", "open_clip_config.json").write_text(json.dumps(config))
    source = make_tiny_clip(seed=6)
    save_file(source.state_dict(), hf_cache_file(tmp_path, "fgvc-test/tiny-hub", "open_clip_model.safetensors"))
    model, preprocess, tokenizer = load_clip("hf-hub:fgvc-test/tiny-hub", cache_dir=tmp_path, download=False)
    assert same_weights(model, source)
    assert preprocess(Image.new("RGB", (32, 32))).shape == (3, 32, 32)


def test_unknown_model_tag_or_precision_is_a_user_error(tiny_model_name):
    with pytest.raises(UserError, match="did you mean"):
        load_clip("ViT-B-33", "openai")
    with pytest.raises(UserError, match="known tag.*openai"):
        load_clip("ViT-B-32", "opneai")
    with pytest.raises(UserError, match="weights file .*missing.pt.* does not exist"):
        load_clip("ViT-B-32", "weights/missing.pt")
    with pytest.raises(UserError, match="precision"):
        load_clip(tiny_model_name, None, precision="fp8")


def test_weights_of_another_architecture_are_a_user_error(tmp_path, tiny_model_name):
    weights = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, weights)
    with pytest.raises(UserError, match="do(es)? not|match"):
        load_clip(tiny_model_name, str(weights))


def test_encoder_and_classifier_normalise_images_in_0_1_inside(tiny_clip):
    x = torch.rand(3, 3, 32, 32)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    expected = F.normalize(tiny_clip.encode_image((x - mean) / std), dim=-1)
    with torch.no_grad():
        assert torch.allclose(ClipImageEncoder(tiny_clip)(x), expected, atol=1e-5)
        head = torch.randn(4, 32)
        classifier = _wrap(tiny_clip, "clip:tiny", 4, 0.0, 32).eval()  # what model.name=clip:... trains
        classifier.head.weight.copy_(head)
        classifier.head.bias.zero_()
        logits = classifier(x)
    assert torch.allclose(logits, expected @ head.T, atol=1e-5)
