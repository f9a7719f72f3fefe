"""Protocol record: metrics.json's ``protocol`` block is true for the run it describes."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from fgvc import config, runs
from fgvc.data import build_dataset
from fgvc.data.transforms import eval_transform
from fgvc.protocol import differing_fields, eval_crop, flatten


def _train(root, out, *extra):
    from fgvc.train import train

    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
                             "train.batch_size=16", "data.name=synthbirds", f"data.root={root}", f"out={out}",
                             *extra])
    return train(cfg, progress=False)


def test_a_run_records_its_true_protocol(tiny_run, tiny_synthbirds_root):
    metrics = runs.read_metrics(tiny_run)
    p = metrics["protocol"]
    cfg = runs.load_config(tiny_run)
    sizes = {s: len(build_dataset("synthbirds", tiny_synthbirds_root, s, None, cfg.data.val_fraction,
                                  cfg.train.seed)) for s in ("train", "val", "test")}
    assert p["dataset"] == "synthbirds" and p["task"] == metrics["task"] == "classifier"
    assert p["split_sizes"] == sizes
    assert p["val_draw"] == {"source": "carved from train", "val_fraction": cfg.data.val_fraction,
                             "stratified": True, "seed": cfg.train.seed}
    assert p["input_size"] == 32 and p["resize_shorter_side"] == round(32 / 0.875)
    assert p["crop_ratio"] == pytest.approx(32 / round(32 / 0.875), abs=1e-4)
    assert p["tta"] == "none" and p["train_crop"] == "center"
    assert p["pretrained"] == metrics["pretrained"] == {"source": "scratch"}
    assert p["seed"] == cfg.train.seed
    assert p["precision"] == metrics["precision"] and p["device"] == metrics["device"]
    import fgvc

    assert p["fgvc_version"] == fgvc.__version__
    # from a git checkout: the HEAD commit (+dirty when tracked files changed); installed: None
    src = Path(fgvc.__file__).parent
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and subprocess.run(["git", "-C", str(src), "ls-files", "--error-unmatch",
                                                "protocol.py"], capture_output=True).returncode == 0:
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", p["git_commit"])
        assert p["git_commit"].split("+")[0] == head.stdout.strip()
    else:
        assert p["git_commit"] is None


def test_changing_the_crop_and_size_changes_the_record(tiny_synthbirds_root, tmp_path):
    # data.crop_ratio=1: resize to the crop side, no border cut off
    run = _train(tiny_synthbirds_root, tmp_path, "data.image_size=40", "train.seed=3", "data.val_fraction=0.25",
                 "data.crop_ratio=1.0", "aug.random_crop=true")
    p = runs.read_metrics(run)["protocol"]
    assert (p["input_size"], p["resize_shorter_side"], p["crop_ratio"]) == (40, 40, 1.0)
    assert p["train_crop"] == "resize-random"
    assert p["seed"] == 3 and p["val_draw"]["seed"] == 3 and p["val_draw"]["val_fraction"] == 0.25


def test_eval_crop_reads_the_pipeline():
    assert eval_crop(eval_transform(224)) == {"input_size": 224, "resize_shorter_side": 256, "crop_ratio": 0.875}
    assert eval_crop(None) == {"input_size": None, "resize_shorter_side": None, "crop_ratio": None}


def test_differing_fields_only_names_what_differs():
    a = {"dataset": "cub200", "crop_ratio": 0.875, "val_draw": {"seed": 0, "val_fraction": 0.1}}
    b = {"dataset": "cub200", "crop_ratio": 1.0, "val_draw": {"seed": 1, "val_fraction": 0.1}}
    assert differing_fields([a, b, None]) == ["crop_ratio", "val_draw.seed"]
    assert differing_fields([a, a]) == []
    assert flatten(b)["val_draw.seed"] == 1


def _fake_run(folder: Path, name: str, crop: float, test_acc: float) -> Path:
    run = folder / name
    run.mkdir(parents=True)
    protocol = {"task": "classifier", "dataset": "synthbirds", "crop_ratio": crop, "seed": 0}
    runs.write_json_atomic(run / "metrics.json", {"train_acc": 0.9, "val_acc": 0.8, "test_acc": test_acc,
                                                 "epochs_run": 1, "seconds": 1.0, "device": "cpu",
                                                 "protocol": protocol})
    return run


def test_study_table_shows_protocol_fields_that_differ(tmp_path):
    from fgvc.experiments.study import write_table

    _fake_run(tmp_path, "a", 0.875, 0.5)
    _fake_run(tmp_path, "b", 1.0, 0.6)
    table = write_table(tmp_path, ["a", "b"], ["test_acc"], "t")
    header = table.splitlines()[2]
    assert "protocol.crop_ratio" in header and "protocol.dataset" not in header
    assert "| a | 0.5000 | 1 | 1.0 | cpu | 0.875 |" in table and "| b | 0.6000 | 1 | 1.0 | cpu | 1.0 |" in table
    assert "protocol.crop_ratio" in (tmp_path / "table.csv").read_text().splitlines()[0]


def test_report_shows_protocol_fields_that_differ(tmp_path):
    from fgvc.report import write_report

    _fake_run(tmp_path, "a", 0.875, 0.5)
    _fake_run(tmp_path, "b", 1.0, 0.6)
    text = write_report(tmp_path).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| run | model"))
    assert "protocol." not in header  # the protocol fields get a table of their own: the main one stays narrow
    # every run's evaluation crop ratio is shown beside its input size, differing or not
    assert header.startswith("| run | model | method | data | px | eval crop |")
    protocol = next(line for line in text.splitlines() if line.startswith("| run | protocol."))
    assert protocol == "| run | protocol.crop_ratio |" and "protocol.seed" not in text
    assert "| a | 0.8750 |" in text and "| b | 1.0000 |" in text


def test_clip_metrics_get_a_protocol_block(tmp_path):
    from fgvc.clip import outputs

    metrics = {"task": "zeroshot", "test_acc": 0.5, "model": "ViT-B-16", "pretrained": "openai", "data": "cub200",
               "split": "test", "image_size": 224, "n_images": 10, "device": "cpu"}
    outputs.write_json(tmp_path / "metrics.json", metrics)
    p = json.loads((tmp_path / "metrics.json").read_text())["protocol"]
    assert p["dataset"] == "cub200" and p["input_size"] == 224 and p["split_sizes"] == {"test": 10}
    assert p["pretrained"] == {"source": "open_clip", "name": "ViT-B-16", "tag": "openai"} and p["tta"] == "none"
    assert metrics["protocol"] == p  # the returned metrics carry it too
