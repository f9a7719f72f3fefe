"""Multi-device training (DDP through Lightning Fabric), exercised with two CPU processes (gloo).

GPUs take the same code path with NCCL; this is what CI can run.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from fgvc.cli import main


def test_two_processes_train_one_run_with_exact_shared_metrics(tiny_synthbirds_root, tmp_path, capsys):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "fgvc", "train", "--quiet", "model.name=test_resnet", "data.image_size=32",
           "train.batch_size=8", "train.epochs=2", "train.patience=0", "data.num_workers=0",
           "train.precision=32-true", "train.accelerator=cpu", "train.devices=2", "data.name=synthbirds",
           f"data.root={tiny_synthbirds_root}", f"out={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]

    run_dirs = list(out.iterdir())
    assert len(run_dirs) == 1, run_dirs  # both processes wrote into the folder the first one named
    run_dir = run_dirs[0]
    assert done.stdout.count(str(run_dir)) == 2  # "run directory: ..." and the final line, once each
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["epochs_run"] == 2

    # every training image was seen once per epoch across the two shards (DistributedSampler
    # pads an odd count with one repeat so both processes take the same number of steps)
    ips, secs = metrics["train_images_per_second"], metrics["train_seconds"]
    rounding = 0.005 * secs + 0.005 * ips + 0.5  # both are rounded to 2 decimals in metrics.json
    assert ips * secs == pytest.approx(2 * 2 * math.ceil(metrics["train_images"] / 2), abs=rounding)

    # val/test accuracies summed over the shards equal a single-process evaluation of the same weights
    for split, key in (("val", "val_acc"), ("test", "test_acc")):
        assert main(["eval", str(run_dir), "--split", split, "--json"]) == 0
        single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert single["n"] == metrics[f"{split}_images"]
        assert single["acc"] == pytest.approx(metrics[key], abs=1e-9), split


@pytest.mark.slow  # two or more fresh processes (~15-25 s on 2 cores); `make test-all` runs it
def test_a_nan_loss_on_one_process_stops_both_with_one_sentence(tiny_synthbirds_root, tmp_path):
    # only the second process sees a NaN loss; without the shared check the first would wait
    # for it at the next gradient all-reduce until the process group timed out
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(
        "import os, sys\n"
        "import fgvc.train.tricks as tricks\n"
        "from fgvc.cli import main\n"
        "real = tricks.soft_cross_entropy\n"
        "def loss(*args):\n"
        "    out = real(*args)\n"
        "    return out * float('nan') if os.environ.get('LOCAL_RANK') == '1' else out\n"
        "tricks.soft_cross_entropy = loss\n"
        "sys.exit(main(sys.argv[1:]))\n")
    cmd = [sys.executable, str(script), "train", "--quiet", "model.name=test_resnet", "data.image_size=32",
           "train.batch_size=8", "train.epochs=2", "data.num_workers=0", "train.accelerator=cpu", "train.devices=2",
           "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path / 'runs'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "loss became nan at epoch 1 step 1" in done.stderr
    assert "loss became nan or inf on another process at epoch 1 step 1" in done.stderr
