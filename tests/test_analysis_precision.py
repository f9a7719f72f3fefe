"""One device resolver, and analyses (eval, attack, explain) in the precision the run trained in."""

import json

import pytest
import torch

from fgvc import api, devices, runs
from fgvc.cli import build_parser, main
from fgvc.devices import analysis_precision, autocast, resolve_device
from fgvc.errors import UserError

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not devices.supports_bf16(CPU), reason="this CPU has no bf16 instructions")


@pytest.fixture(scope="module")
def fp32_run(tiny_synthbirds_root, tmp_path_factory):
    from fgvc import config
    from fgvc.train import train

    out = tmp_path_factory.mktemp("fp32_run")
    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=32", "train.epochs=1", "data.num_workers=0",
                             "train.batch_size=16", f"data.root={tiny_synthbirds_root}", f"out={out}",
                             "train.precision=32-true", "train.accelerator=cpu"])
    return train(cfg, progress=False)


def _eval(capsys, *argv):
    assert main(["eval", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@needs_bf16
def test_eval_of_a_bf16_run_runs_in_bf16_and_matches_training(tiny_run, capsys):
    trained = runs.read_metrics(tiny_run)
    assert trained["precision"] == "bf16-mixed"  # precision auto on a CPU with bf16 instructions
    result = _eval(capsys, tiny_run, "--device", "cpu")
    assert result["precision"] == result["protocol"]["precision"] == "bf16-mixed"
    assert json.loads((tiny_run / "eval_test.json").read_text())["precision"] == "bf16-mixed"
    assert result["acc"] == pytest.approx(trained["test_acc"], abs=0.02)
    assert result["loss"] == pytest.approx(trained["test_loss"], abs=0.02)
    # told otherwise, it runs in fp32; the bf16 forward does change the logits (the autocast is on)
    fp32 = _eval(capsys, tiny_run, "--precision", "32-true")
    assert fp32["precision"] == "32-true" and fp32["loss"] != result["loss"]


def test_eval_of_an_fp32_run_stays_fp32(fp32_run, capsys):
    trained = runs.read_metrics(fp32_run)
    result = _eval(capsys, fp32_run)
    assert trained["precision"] == "32-true" and result["precision"] == "32-true"
    assert result["acc"] == pytest.approx(trained["test_acc"], abs=1e-6)
    assert result["loss"] == pytest.approx(trained["test_loss"], abs=1e-4)


def spy_on_autocast(model) -> list[bool]:
    """Record, per forward of ``model`` (its class kept), whether it ran under CPU bf16 autocast."""
    seen, forward = [], model.forward

    def spied(x):
        seen.append(torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype() == torch.bfloat16)
        return forward(x)

    model.forward = spied
    return seen


@needs_bf16
def test_attack_and_explain_run_in_the_runs_precision_with_fp32_images(tiny_run, tmp_path, monkeypatch):
    from fgvc.explain.run import explain_run
    from fgvc.robust.run import attack_run

    spies = []
    load = api.load

    def spied_load(run_dir, checkpoint="best"):
        model, names = load(run_dir, checkpoint)
        spies.append(spy_on_autocast(model))
        return model, names

    monkeypatch.setattr(api, "load", spied_load)
    result = attack_run(tiny_run, "pgd", [0.0, 0.03], split="val", limit=6, steps=2, progress=False)
    assert result["precision"] == "bf16-mixed" and spies[0] and all(spies[0])
    record = json.loads((tiny_run / "attack" / "pgd_val_n6.json").read_text())
    assert record["precision"] == "bf16-mixed"
    fp32 = attack_run(tiny_run, "pgd", [0.0, 0.03], split="val", limit=6, steps=2, progress=False,
                      precision="32-true")
    assert fp32["precision"] == "32-true" and spies[-1] and not any(spies[-1])

    spies.clear()
    out = explain_run(tiny_run, methods="gradcam", split="val", limit=2, out_dir=tmp_path / "x", log=None,
                      localization=False)
    assert out["precision"] == "bf16-mixed" and out["device"] == "cpu" and any(spies[0])


@needs_bf16
def test_attack_steps_stay_fp32_under_bf16_autocast():
    from fgvc.robust.attacks import pgd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    model(x)
    with autocast("bf16-mixed", CPU):
        x_adv = pgd(model, x, y, 0.03, steps=3, generator=torch.Generator().manual_seed(0))
    assert x_adv.dtype == torch.float32 and (x_adv - x).abs().max() <= 0.03 + 1e-6 and (x_adv != x).any()


def test_analysis_precision_follows_the_run_where_the_device_can(monkeypatch, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"precision": "bf16-mixed"}))
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert analysis_precision("run", CPU, run) == "bf16-mixed"
    assert analysis_precision("32-true", CPU, run) == "32-true"
    assert analysis_precision("16-mixed", CPU) == "bf16-mixed"  # CPU autocast has no fp16, as in training
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)  # emulated bf16: several times slower
    assert analysis_precision("run", CPU, run) == "32-true"
    (run / "metrics.json").write_text(json.dumps({"precision": "32-true"}))
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert analysis_precision("run", CPU, run) == "32-true"
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        analysis_precision("fp8", CPU, run)


def test_resolve_device():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == CPU
    with pytest.raises(UserError, match="unknown device 'tpu0'"):
        resolve_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no usable CUDA GPU"):
            resolve_device("cuda")


def test_every_device_option_defaults_to_auto():
    found = {}

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action.choices, dict):  # subcommands
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif "--device" in action.option_strings:
                found[" ".join(path)] = action.default

    walk(build_parser(), ())
    assert {"eval", "explain", "attack", "gan sample", "zeroshot", "clip probe", "clip finetune"} <= set(found)
    assert set(found.values()) == {"auto"}, found


@needs_bf16
def test_attack_compare_records_each_runs_own_precision(tiny_run, fp32_run):
    from fgvc.robust.run import attack_run

    attack_run(tiny_run, "fgsm", [0.0, 0.03], split="val", limit=4, compare=fp32_run, progress=False)
    record = json.loads((tiny_run / "attack" / "fgsm_val_n4.json").read_text())
    # curves are named by what differs between the two runs (the model here), each with its own precision
    assert record["precisions"] == {"resnet18": "bf16-mixed", "test_resnet": "32-true"}
