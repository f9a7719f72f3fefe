import json
import shutil

import pytest
import torch

from fgvc import api, config, runs
from fgvc.errors import UserError
from fgvc.train import train

# train.threads=fixed: runs compared bit for bit keep one thread count (beside other jobs auto would change it)
FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=16", "train.lr=2e-3",
        "train.patience=0", "data.num_workers=0", "train.precision=32-true", "train.threads=fixed"]


def _cfg(root, out, *extra):
    return config.load(None, [*FAST, "data.name=synthbirds", f"data.root={root}", f"out={out}", *extra])


def _metrics(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    for timing in ("seconds", "train_seconds", "train_images_per_second"):
        m.pop(timing)
    return m


def test_short_run_on_synthbirds_learns_well_above_chance(synthbirds_root, tmp_path):
    # the demo's recipe; it reached 0.74 test accuracy in 16 s on a 2-core CPU (chance 0.125)
    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=64", "train.batch_size=32", "train.lr=2e-3",
                             "train.epochs=10", "train.milestones=[7]", "train.patience=0", "data.num_workers=0",
                             "data.name=synthbirds", f"data.root={synthbirds_root}", f"out={tmp_path}"])
    run_dir = train(cfg, progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_acc"] >= 3 * (1 / 8), metrics


def test_run_directory_holds_the_contract(tiny_synthbirds_root, tmp_path):
    run_dir = train(_cfg(tiny_synthbirds_root, tmp_path, "train.epochs=2"), progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for field in runs.METRIC_FIELDS:
        assert field in metrics, field
    for acc in ("train_acc", "val_acc", "test_acc", "test_top5"):
        assert 0.0 <= metrics[acc] <= 1.0
    assert metrics["epochs_run"] == 2 and metrics["params_trainable"] == metrics["params_total"]
    assert (run_dir / "history.csv").read_text().count("\n") == 3
    assert (run_dir / "curves.png").stat().st_size > 1000
    assert config.load(run_dir / "config.yaml").train.epochs == 2
    assert json.loads((run_dir / "classes.json").read_text())[0].startswith("001.")
    model, names = api.load(run_dir)
    assert not model.training and len(names) == 4


def test_same_seed_gives_identical_metrics(tiny_synthbirds_root, tmp_path):
    a = train(_cfg(tiny_synthbirds_root, tmp_path / "a", "train.epochs=2", "aug.geometric=true"), progress=False)
    b = train(_cfg(tiny_synthbirds_root, tmp_path / "b", "train.epochs=2", "aug.geometric=true"), progress=False)
    assert _metrics(a) == _metrics(b)


def test_loader_workers_do_not_change_the_result(tiny_synthbirds_root, tmp_path):
    # augmentation is seeded per image (fgvc.data.seeding), so 2 persistent workers = none
    extra = ["train.epochs=2", "aug.geometric=true", "aug.cutout=1"]
    a = train(_cfg(tiny_synthbirds_root, tmp_path / "a", *extra), progress=False)
    b = train(_cfg(tiny_synthbirds_root, tmp_path / "b", *extra, "data.num_workers=2"), progress=False)
    assert _metrics(a) == _metrics(b)


def test_resumed_run_ends_where_an_uninterrupted_one_does(tiny_synthbirds_root, tmp_path):
    extra = ["train.epochs=3", "aug.geometric=true", "model.dropout=0.2"]
    full = train(_cfg(tiny_synthbirds_root, tmp_path / "full", *extra), progress=False)
    # an interrupted run: only two epochs done, state saved after the second
    part = train(_cfg(tiny_synthbirds_root, tmp_path / "part", "train.epochs=2", *extra[1:]), progress=False)
    (part / "metrics.json").unlink()
    cfg = _cfg(tiny_synthbirds_root, tmp_path / "part", *extra)
    (part / "config.yaml").write_text(config.dump(cfg))
    resumed = train(runs.load_config(part), run_dir=part, resume=True, progress=False)
    assert _metrics(resumed) == _metrics(full)
    a, b = runs.load_weights(full / "checkpoints/last.safetensors"), runs.load_weights(resumed / "checkpoints/last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_reproduces_the_source_backbone(tiny_synthbirds_root, tmp_path):
    source = train(_cfg(tiny_synthbirds_root, tmp_path / "src", "train.epochs=1"), progress=False)
    from fgvc.api import build_model

    cfg = _cfg(tiny_synthbirds_root, tmp_path, "model.trainable=fc", f"model.init_from={source}")
    model = build_model(cfg, num_classes=3).eval()
    src_model, _ = api.load(source)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = torch.nn.Sequential(*list(model.net.children())[:-1])(model.normalize(x))
        src_feats = torch.nn.Sequential(*list(src_model.net.children())[:-1])(src_model.normalize(x))
    assert torch.allclose(feats, src_feats)
    assert model.head.out_features == 3


def test_missing_dataset_root_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        train(_cfg(tmp_path / "nowhere", tmp_path, "train.epochs=1"), progress=False)


def test_corrupt_image_stops_training_with_its_name(tiny_synthbirds_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_synthbirds_root, root)
    victim = sorted((root / "CUB_200_2011" / "images").rglob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=victim.name):
        train(_cfg(root, tmp_path, "train.epochs=1"), progress=False)


def test_one_short_run_with_every_trick_on(tiny_synthbirds_root, tmp_path):
    run_dir = train(_cfg(tiny_synthbirds_root, tmp_path, "train.epochs=1", "aug.geometric=true", "aug.cutout=1",
                         "aug.mixup_alpha=0.2", "aug.cutmix_alpha=1.0", "aug.label_smoothing=0.1",
                         "model.dropout=0.3", "train.batch_size=8"), progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and 0 <= metrics["train_acc"] <= 1
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))


def test_frozen_backbone_run_records_trainable_counts(tiny_synthbirds_root, tmp_path):
    run_dir = train(_cfg(tiny_synthbirds_root, tmp_path, "train.epochs=1", "model.trainable=fc"), progress=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model, _ = api.load(run_dir)
    assert metrics["params_trainable"] == model.head.in_features * 4 + 4  # test_resnet's fc: 96 inputs
    assert metrics["params_total"] == sum(p.numel() for p in model.parameters()) > 300_000
