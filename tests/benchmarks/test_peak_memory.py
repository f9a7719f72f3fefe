"""benchmarks/peak_memory.py: each cell builds the method's model and runs its own training step, as the loop does."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fgvc import config
from fgvc.api import build_model
from fgvc.models import count_parameters

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peak_memory.py"
TINY = ["--size", "32", "--steps", "2", "--classes", "4", "--batches", "8"]


@pytest.fixture(scope="module")
def peak_memory():
    spec = importlib.util.spec_from_file_location("peak_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(peak_memory, capsys, method: str, *extra: str) -> dict:
    peak_memory.main(["--one", "test_resnet", method, "8", *TINY, *extra, "--out", "unused.md"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# one method per family: the plain head, second-order pooling, attention crops, a step per granularity, pairs
@pytest.mark.parametrize("method, views, steps", [("plain", 1, 1), ("bilinear", 1, 1), ("wsdan", 3, 1), ("cal", 3, 1),
                                                  ("pmg", 4, 4), ("api_net", 1, 1)])
def test_a_cell_trains_the_methods_model_with_its_own_step(peak_memory, capsys, method, views, steps):
    row = _cell(peak_memory, capsys, method)
    # WS-DAN and CAL see each image, its attention crop and its drop; PMG steps once per granularity
    assert (row["method"], row["views"], row["optimizer_steps"]) == (method, views, steps)
    # the model fgvc's training builds for this method (bilinear at the birds50_methods study's 256 channels)
    cfg = config.load(None, ["model.name=test_resnet", f"method.name={method}", "data.image_size=32",
                             *peak_memory.SETTINGS.get(method, [])])
    assert round(row["params_m"] * 1e6) == count_parameters(build_model(cfg, 4))["params_total"]


def test_trainable_freezes_what_model_trainable_freezes(peak_memory, capsys):
    row = _cell(peak_memory, capsys, "wsdan", "--trainable", "layer4+fc")
    cfg = config.load(None, ["model.name=test_resnet", "method.name=wsdan", "model.trainable=layer4+fc",
                             "data.image_size=32"])
    assert round(row["trainable_m"] * 1e6) == count_parameters(build_model(cfg, 4))["params_trainable"]
    assert row["trainable_m"] < row["params_m"]


def test_a_method_with_more_passes_grows_memory_more_in_its_own_process(tmp_path):
    out = tmp_path / "peak.md"
    subprocess.run([sys.executable, str(SCRIPT), "--models", "test_resnet", "--methods", "plain,wsdan",
                    "--size", "128", "--batches", "16", "--steps", "2", "--classes", "4", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| test_resnet |")]
    by_method = {r[1]: r for r in rows}
    assert list(by_method) == ["plain", "wsdan"]
    growth = {m: float(r[9]) for m, r in by_method.items()}  # growth of the resident set over the step, MiB
    # at 128 px the three views' activations (about 2x plain's growth here) stand well above the allocator's
    # noise of a few MiB; at 64 px they did not
    assert by_method["wsdan"][7] == "3 / 1" and growth["wsdan"] > growth["plain"] * 1.4
