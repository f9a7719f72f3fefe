"""A study row {task: probe} fits a linear probe on the study's backbone (fgvc.train.probe)."""

import json

import pytest
import yaml

from fgvc.errors import UserError
from fgvc.experiments.study import run_study


def _study(tmp_path, rows):
    path = tmp_path / "probe_study.yaml"
    path.write_text(yaml.safe_dump({"title": "probe", "overrides": ["model.name=resnet18", "data.name=synthbirds",
                                                                    "data.image_size=32", "train.accelerator=cpu"],
                                    "rows": rows}))
    return path


def test_a_probe_row_writes_probe_metrics_into_the_table(tmp_path, tiny_synthbirds_root):
    path = _study(tmp_path, {"linear_probe": {"task": "probe", "overrides": ["model.dropout=0.1"]}})
    folder = run_study(str(path), [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "runs", progress=False)
    metrics = json.loads((folder / "linear_probe" / "metrics.json").read_text())
    assert metrics["task"] == "linear_probe" and metrics["feature_dim"] == 512
    assert "dropout: 0.1" in (folder / "linear_probe" / "config.yaml").read_text()  # the row's overrides applied
    assert f"{metrics['test_acc']:.4f}" in (folder / "table.md").read_text()


def test_a_probe_row_with_other_keys_is_refused_before_anything_runs(tmp_path, tiny_synthbirds_root):
    path = _study(tmp_path, {"linear_probe": {"task": "probe", "epochs": 3}})
    with pytest.raises(UserError, match="a probe row takes only task and overrides"):
        run_study(str(path), [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()
