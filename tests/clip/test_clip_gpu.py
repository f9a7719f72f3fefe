"""The mixed-precision paths, on a CUDA device: run with ``pytest -m gpu tests/clip``."""

import pytest
import torch
from torch.utils.data import DataLoader

from fgvc.clip.finetune import evaluate_classifier, finetune_clip
from fgvc.clip.models import clip_transform
from fgvc.clip.prompts import prompt_names
from fgvc.clip.zeroshot import encode_images

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
NAMES = prompt_names(["001.Red_Square", "002.Green_Circle", "003.Blue_Triangle", "004.Yellow_Cross"])


def test_gpu_autocast_embeddings_match_cpu_fp32(tiny_clip, shapes):
    loader = DataLoader(shapes(4, seed=0, transform=clip_transform(tiny_clip)), batch_size=8)
    cpu, labels = encode_images(tiny_clip, loader, "cpu", progress=False)
    gpu, labels_gpu = encode_images(tiny_clip.cuda(), loader, "cuda", progress=False)
    assert gpu.dtype == torch.float32 and gpu.device.type == "cpu" and torch.equal(labels, labels_gpu)
    assert (cpu * gpu).sum(1).min() > 0.99  # cosine similarity despite bf16/fp16 arithmetic


def test_gpu_finetuning_beats_zero_shot(tiny_clip, tokenizer, shapes):
    torch.manual_seed(0)
    transform = clip_transform(tiny_clip)
    train = DataLoader(shapes(16, seed=1, transform=transform), batch_size=16, shuffle=True)
    test = DataLoader(shapes(8, seed=3, transform=transform), batch_size=64)
    result = finetune_clip(tiny_clip, tokenizer, NAMES, ["a photo of a {}."], train, test, epochs=6, lr=1e-3,
                           weight_decay=0.01, device="cuda", progress=False)
    finetuned = evaluate_classifier(result.model, test, "cuda")["acc"]
    result.model.load_state_dict(result.zeroshot_state)
    zeroshot = evaluate_classifier(result.model, test, "cuda")["acc"]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    assert finetuned >= zeroshot + 0.25, (zeroshot, finetuned)
