"""The mixed-precision paths, on a CUDA device: run with ``pytest -m gpu tests/clip``."""

import pytest
import torch
from torch.utils.data import DataLoader

from fgvc.clip.finetune import run_finetune
from fgvc.clip.models import clip_transform
from fgvc.clip.zeroshot import encode_images

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_gpu_autocast_embeddings_match_cpu_fp32(tiny_clip, shapes):
    loader = DataLoader(shapes(4, seed=0, transform=clip_transform(tiny_clip)), batch_size=8)
    cpu, labels = encode_images(tiny_clip, loader, "cpu", progress=False)
    gpu, labels_gpu = encode_images(tiny_clip.cuda(), loader, "cuda", progress=False)
    assert gpu.dtype == torch.float32 and gpu.device.type == "cpu" and torch.equal(labels, labels_gpu)
    assert (cpu * gpu).sum(1).min() > 0.99  # cosine similarity despite bf16/fp16 arithmetic


def test_gpu_finetuning_through_the_loop_beats_zero_shot(tiny_model_name, synthbirds_root, tmp_path):
    from tinyclip import make_tiny_clip

    weights = tmp_path / "tiny.pt"
    torch.save(make_tiny_clip(seed=1).state_dict(), weights)
    metrics = run_finetune(tiny_model_name, str(weights), "synthbirds", synthbirds_root, tmp_path / "run", epochs=8,
                           batch_size=8, lr=2e-3, weight_decay=0.01, augment=False, device="cuda", num_workers=0,
                           download=False, progress=False)
    assert metrics["device"].startswith("cuda") and metrics["precision"] in ("bf16-mixed", "16-mixed")
    assert metrics["test_acc"] >= metrics["zeroshot_test_acc"] + 0.25, metrics["wise_ft"]
