"""fgvc.api.Run: one object that every analysis of a run directory reads."""

import json
import shutil

import pytest
import torch
import yaml

from fgvc import api, runs
from fgvc.data import build_dataset
from fgvc.data.transforms import eval_transform
from fgvc.errors import UserError


def test_a_run_gives_its_config_classes_splits_and_model(tiny_run, tiny_synthbirds_root):
    run = api.Run(tiny_run)
    cfg = runs.load_config(tiny_run)
    assert run.config == cfg and run.class_names == runs.load_class_names(tiny_run)
    assert run.metrics == runs.read_metrics(tiny_run) and run.precision == run.metrics["precision"]
    # the split the run was scored on: its val draw (fraction, seed) and its eval pipeline
    val = run.dataset("val")
    same = build_dataset(cfg.data.name, tiny_synthbirds_root, "val", eval_transform(cfg.data.image_size),
                         cfg.data.val_fraction, cfg.train.seed)
    assert [s.path for s in val.samples] == [s.path for s in same.samples]
    assert torch.equal(val[0][0], same[0][0]) and val[0][0].shape[-1] == cfg.data.image_size
    model = run.model()
    reference, _ = api.load(tiny_run)
    x = val[0][0][None]
    assert not model.training and torch.equal(model(x), reference(x))


def test_a_run_reads_its_data_from_a_moved_root(tiny_run, tiny_synthbirds_root, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_synthbirds_root, moved)
    run = api.Run(tiny_run)
    test = run.dataset("test", root=moved)
    assert str(test.samples[0].path).startswith(str(moved))
    assert len(test) == len(run.dataset("test"))


def test_a_run_on_a_class_subset_gives_only_those_classes(tiny_run, tiny_synthbirds_root, tmp_path):
    # a data.classes run: every analysis (eval, attack, explain, audits) reads its splits through Run.dataset
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["classes"] = "second-half"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    run = api.Run(copy)
    for split in ("train", "val", "test"):
        subset = run.dataset(split)
        same = build_dataset("synthbirds", tiny_synthbirds_root, split, None, run.config.data.val_fraction,
                             run.config.train.seed, classes="second-half")
        full = build_dataset("synthbirds", tiny_synthbirds_root, split, None, run.config.data.val_fraction,
                             run.config.train.seed)
        assert [s.path for s in subset.samples] == [s.path for s in same.samples]
        assert subset.class_names == full.class_names[2:] and {s.label for s in subset.samples} == {0, 1}
        assert 0 < len(subset) < len(full)


def test_a_run_writes_atomically_into_its_folder(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    run = api.Run(copy)
    path = run.write_json("eval_extra.json", {"acc": 0.5})
    assert json.loads(path.read_text()) == {"acc": 0.5} and path.parent == copy
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]  # no temp file left


def test_a_folder_that_is_not_a_run_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="not an fgvc run directory"):
        api.Run(tmp_path)


def test_a_loaded_run_keeps_the_memory_order_it_trained_and_was_tested_in(tiny_run, tmp_path):
    # fgvc eval must score the weights with the kernels training's test pass used (metrics.json channels_last)
    def conv_is_channels_last(model) -> bool:
        w = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
        return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()

    trained = json.loads((tiny_run / "metrics.json").read_text())["channels_last"]
    assert conv_is_channels_last(api.load(tiny_run)[0]) is trained
    copy = shutil.copytree(tiny_run, tmp_path / "run")
    metrics = json.loads((copy / "metrics.json").read_text())
    for flag in (True, False):
        (copy / "metrics.json").write_text(json.dumps({**metrics, "channels_last": flag}))
        assert conv_is_channels_last(api.load(copy)[0]) is flag
    (copy / "metrics.json").write_text("{damaged")  # the weights still load, in the default order
    assert conv_is_channels_last(api.load(copy)[0]) is False
