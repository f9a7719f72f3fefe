"""The embedding cache is keyed by what it depends on; prompts are never cut silently at CLIP's
77-token context."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tinyclip import make_tiny_clip
from torch.utils.data import DataLoader

from fgvc.clip.models import clip_transform
from fgvc.clip.zeroshot import cache_key, encode_images, run_zeroshot
from fgvc.data import synthetic

# ---------------------------------------------------------------- 6: the embedding cache


@pytest.fixture
def zeroshot_setup(tmp_path, tiny_model_name):
    root = synthetic.generate(tmp_path / "birds", classes=4, per_class=8, size=32, seed=0)
    weights = tmp_path / "tiny.pt"
    torch.save(make_tiny_clip(seed=5).state_dict(), weights)
    common = dict(model_name=tiny_model_name, pretrained=str(weights), dataset_name="synthbirds", root=root,
                  device="cpu", num_workers=0, cache_dir=tmp_path / "cache", progress=False)
    return root, common


def _rewrite_images_in_place(root, seed: int = 1) -> int:
    """Every image replaced by other pixels, same path and name (what a re-export or an edit does)."""
    rng = np.random.default_rng(seed)
    files = sorted((root / "CUB_200_2011" / "images").rglob("*.jpg"))
    for f in files:
        with Image.open(f) as im:
            size = im.size
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(f, quality=90)
    return len(files)


def test_images_rewritten_in_place_are_encoded_again(zeroshot_setup, tmp_path):
    root, common = zeroshot_setup
    first = run_zeroshot(out_dir=tmp_path / "a", **common)
    assert first["embeddings_cached"] is False
    assert run_zeroshot(out_dir=tmp_path / "b", **common)["embeddings_cached"] is True  # nothing changed: reused

    assert _rewrite_images_in_place(root) == 32
    again = run_zeroshot(out_dir=tmp_path / "c", **common)
    fresh = run_zeroshot(out_dir=tmp_path / "d", **{**common, "use_cache": False})
    assert again["embeddings_cached"] is False
    assert again["test_acc"] == fresh["test_acc"] and again["per_class_acc"] == fresh["per_class_acc"]
    # the re-encoded cache then answers for the new images
    assert run_zeroshot(out_dir=tmp_path / "e", **common)["embeddings_cached"] is True
    assert len(list((tmp_path / "cache" / "clip-embeddings").iterdir())) == 1  # rewritten, not piled up


def test_the_cache_follows_the_weights_file(zeroshot_setup, tmp_path):
    root, common = zeroshot_setup
    run_zeroshot(out_dir=tmp_path / "a", **common)
    torch.save(make_tiny_clip(seed=6).state_dict(), common["pretrained"])  # other weights, same file name
    assert run_zeroshot(out_dir=tmp_path / "b", **common)["embeddings_cached"] is False


def test_encode_images_checks_its_cache_against_the_loaders_images(tmp_path, tiny_clip):
    from fgvc.data.base import FineGrainedDataset, Sample

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(paths[-1])
    ds = FineGrainedDataset([Sample(p, i % 2) for i, p in enumerate(paths)], ["a", "b"], clip_transform(tiny_clip))
    cache = tmp_path / "emb.safetensors"
    first, _ = encode_images(tiny_clip, DataLoader(ds, batch_size=4), cache_path=cache, progress=False)
    Image.fromarray(np.full((32, 32, 3), 250, dtype=np.uint8)).save(paths[0])  # same size on disk, new time
    second, _ = encode_images(tiny_clip, DataLoader(ds, batch_size=4), cache_path=cache, progress=False)
    assert not torch.allclose(first[0], second[0]) and torch.allclose(first[1:], second[1:], atol=1e-6)

    # another transform (here: no centre crop at 32 px, a 24 px resize) is another key
    from torchvision.transforms import v2

    other = FineGrainedDataset(ds.samples, ds.class_names, v2.Compose([v2.ToImage(), v2.Resize(24)]))
    assert cache_key(other, tiny_clip) != cache_key(ds, tiny_clip) == cache_key(ds, tiny_clip)


# ---------------------------------------------------------------- 9: prompts past the 77-token context

LONG = "a small bird with " + ", ".join(["a pale grey breast and dark streaked wings"] * 12)


def test_a_description_that_pushes_the_class_name_past_the_context_is_refused(tiny_clip, tokenizer):
    from fgvc.clip.prompts import token_count
    from fgvc.clip.zeroshot import zeroshot_weights
    from fgvc.errors import UserError

    description = LONG + ", known as the {}"
    n = token_count(tokenizer, description.replace("{}", "Laysan Albatross"))
    assert n > 77
    with pytest.raises(UserError) as e:
        zeroshot_weights(tiny_clip, tokenizer, ["Laysan Albatross", "Sooty Albatross"], ["a photo of a {}."],
                         [[description], []])
    text = str(e.value)
    assert "'Laysan Albatross'" in text and f"{n} tokens" in text and "77" in text and "\n" not in text


def test_a_long_prompt_that_keeps_the_class_name_is_used_with_a_warning(tiny_clip, tokenizer):
    from fgvc.clip.prompts import PromptTruncated, token_count
    from fgvc.clip.zeroshot import zeroshot_weights

    description = "the {}: " + LONG
    n = token_count(tokenizer, description.replace("{}", "Sooty Albatross"))
    with pytest.warns(PromptTruncated, match=rf"'Sooty Albatross' from description 1 has {n} tokens"):
        weights = zeroshot_weights(tiny_clip, tokenizer, ["Laysan Albatross", "Sooty Albatross"],
                                   ["a photo of a {}."], [[], [description]])
    assert weights.shape == (2, 32)


def test_a_class_name_longer_than_the_context_is_refused(tiny_clip, tokenizer):
    from fgvc.clip.zeroshot import zeroshot_weights
    from fgvc.errors import UserError

    name = " ".join(["Greater"] * 90) + " Albatross"
    with pytest.raises(UserError, match="from template 'a photo of a {}.' has"):
        zeroshot_weights(tiny_clip, tokenizer, ["Sooty Albatross", name], ["a photo of a {}."])


def test_short_prompts_pass_without_a_warning(tiny_clip, tokenizer, recwarn):
    from fgvc.clip.prompts import TEMPLATES, PromptTruncated
    from fgvc.clip.zeroshot import zeroshot_weights

    zeroshot_weights(tiny_clip, tokenizer, ["Black-footed Albatross", "Laysan Albatross"], TEMPLATES["imagenet80"])
    assert not [w for w in recwarn if issubclass(w.category, PromptTruncated)]
