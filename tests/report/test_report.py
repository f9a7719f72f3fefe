"""`fgvc report` reads run directories only and writes Markdown, HTML and plots."""

import json

import pytest

from fgvc import config
from fgvc.errors import UserError
from fgvc.report import collect_runs, write_report
from fgvc.train import train


def test_report_lists_runs_with_their_metrics_and_plots(tiny_synthbirds_root, tmp_path):
    cfg = config.load(None, ["model.name=resnet18", "data.image_size=32", "train.epochs=2", "data.num_workers=0",
                             "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path / 'runs'}"])
    run_dir = train(cfg, progress=False)
    zs = tmp_path / "runs" / "zeroshot-x"
    zs.mkdir()
    (zs / "metrics.json").write_text(json.dumps({"task": "zeroshot", "test_acc": 0.25, "test_top5": 0.5}))
    (tmp_path / "runs" / "junk").mkdir()
    (tmp_path / "runs" / "junk" / "metrics.json").write_text("{not json")
    path = write_report(tmp_path / "runs")
    text = path.read_text()
    test_acc = json.loads((run_dir / "metrics.json").read_text())["test_acc"]
    assert run_dir.name in text and f"{test_acc:.4f}" in text
    assert "zeroshot" in text and "test_acc 0.2500" in text
    assert (tmp_path / "runs" / "report_val_acc.png").stat().st_size > 1000
    html = (tmp_path / "runs" / "report.html").read_text()
    assert "<table>" in html and run_dir.name in html
    assert len(collect_runs(tmp_path / "runs")) == 2  # the damaged file is not a run


def test_report_on_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no run directories"):
        write_report(tmp_path)
