"""The training loop on CUDA: bf16, persistent loader workers, resume, and DDP when there are 2+ GPUs."""

import json
import os
import subprocess
import sys

import pytest
import torch

from fgvc import config, runs
from fgvc.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=16", "train.lr=2e-3",
        "train.patience=0", "train.accelerator=cuda", "data.name=synthbirds"]


def test_cuda_run_with_workers_learns_and_resumes(tiny_synthbirds_root, tmp_path):
    common = [*FAST, f"data.root={tiny_synthbirds_root}", "data.num_workers=2", "aug.geometric=true"]
    full = train(config.load(None, [*common, "train.epochs=3", f"out={tmp_path / 'full'}"]), progress=False)
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda") and metrics["precision"] in ("bf16-mixed", "16-mixed")
    part = train(config.load(None, [*common, "train.epochs=2", f"out={tmp_path / 'part'}"]), progress=False)
    (part / "metrics.json").unlink()
    cfg = config.load(None, [*common, "train.epochs=3", f"out={tmp_path / 'part'}"])
    (part / "config.yaml").write_text(config.dump(cfg))
    resumed = train(runs.load_config(part), run_dir=part, resume=True, progress=False)
    # cuDNN kernels may differ run to run, so the resumed run is close, not bit-identical
    a = runs.load_weights(full / "checkpoints/last.safetensors")
    b = runs.load_weights(resumed / "checkpoints/last.safetensors")
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 0.05


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_ddp_on_two_gpus(tiny_synthbirds_root, tmp_path):
    cmd = [sys.executable, "-m", "fgvc", "train", "--quiet", *FAST, "train.devices=2", "train.epochs=2",
           "data.num_workers=2", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["devices"] == 2
