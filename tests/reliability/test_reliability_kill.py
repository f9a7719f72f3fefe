"""`kill -9` in the middle of an epoch, then `fgvc train --resume RUN_DIR`: the same metrics, history and
weights as a run that was never interrupted (same seed, CPU). Real processes, real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import FAST, history_without_timing, metrics_without_timing

from fgvc import runs

# 64 px and a batch of 4: an epoch takes long enough (about a second) to be hit in its middle
ARGS = [*FAST, "data.image_size=64", "train.batch_size=4", "train.epochs=3"]


def _env() -> dict:
    # same threads in every process, so the float results may be compared bit for bit
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _fgvc(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fgvc", *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return out


def _rows(run_dir: Path) -> int:
    path = run_dir / "history.csv"
    return len(path.read_text().splitlines()) - 1 if path.is_file() else 0


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_result(synthbirds_root, tmp_path):
    full = Path(_finish(_fgvc("train", *ARGS, f"data.root={synthbirds_root}", f"out={tmp_path / 'full'}",
                              "--quiet")).strip().splitlines()[-1])

    proc = _fgvc("train", *ARGS, f"data.root={synthbirds_root}", f"out={tmp_path / 'killed'}", "--quiet")
    deadline = time.monotonic() + 240
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").glob("*"))
        run_dir = found[0] if found else None
        if run_dir is not None and _rows(run_dir) == 1:  # epoch 1 is committed; epoch 2 has begun
            break
        time.sleep(0.01)
    time.sleep(0.3)  # well into epoch 2's batches
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert run_dir is not None and _rows(run_dir) == 1, "the kill came after epoch 2 had finished"
    assert runs.load_state(run_dir / "checkpoints" / "last_state.pt")["epoch"] == 0
    assert not (run_dir / "metrics.json").exists()

    _finish(_fgvc("train", "--resume", str(run_dir), "--quiet"))
    assert metrics_without_timing(run_dir) == metrics_without_timing(full)
    assert history_without_timing(run_dir) == history_without_timing(full)
    for name in ("best.safetensors", "last.safetensors"):
        a, b = runs.load_weights(full / "checkpoints" / name), runs.load_weights(run_dir / "checkpoints" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert not [p for p in run_dir.rglob(".*") if p.is_file()]  # no temp file left behind
