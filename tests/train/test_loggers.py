"""Experiment logs (train.loggers): the files read back hold the values the runs wrote to history.csv,
losses.csv and config.yaml; a resumed run continues them; refusals are one sentence, exit code 2."""

import csv
import json
import math
import sys

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fgvc import config, runs
from fgvc.cli import main
from fgvc.errors import UserError
from fgvc.train import train
from fgvc.train.loggers import open_loggers, parse_loggers

FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=16", "train.lr=2e-3", "train.patience=0",
        "data.num_workers=0", "train.precision=32-true"]


def _cfg(root, out, *extra):
    return config.load(None, [*FAST, "data.name=synthbirds", f"data.root={root}", f"out={out}", *extra])


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard itself reads the event files of ``folder``."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tensorboard_hparams(folder) -> tuple[dict, list[str]]:
    """(hyper-parameters, metric tags) of the HPARAMS tab, from the event files of ``folder``."""
    events = EventAccumulator(str(folder))
    events.Reload()
    params, tags = {}, []
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for k, v in data.session_start_info.hparams.items():
                params[k] = v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        if data.HasField("experiment"):
            tags = [m.name.tag for m in data.experiment.metric_infos]
    return params, tags


def _epoch_values(scalars, tag):
    return [v for _, v in scalars[f"epoch/{tag}"]]


def _check_epochs_logged(run_dir, history_keys=("train_loss", "train_acc", "val_loss", "val_acc", "lr")):
    """TensorBoard's and the CSV logger's per-epoch values equal history.csv's."""
    history = _rows(run_dir / "history.csv")
    scalars = tensorboard_scalars(run_dir / "logs" / "tensorboard")
    csv_epochs = [r for r in _rows(run_dir / "logs" / "csv" / "metrics.csv") if r["epoch"]]
    assert [int(float(r["epoch"])) for r in csv_epochs] == [int(h["epoch"]) for h in history]
    for key in history_keys:
        expected = [float(h[key]) for h in history]
        assert _epoch_values(scalars, key) == pytest.approx(expected, rel=1e-6), key  # float32 in event files
        assert [float(r[f"epoch/{key}"]) for r in csv_epochs] == pytest.approx(expected, rel=1e-12), key
    return scalars


def test_classifier_run_logs_steps_epochs_and_config_to_tensorboard_and_csv(tiny_synthbirds_root, tmp_path):
    run_dir = train(_cfg(tiny_synthbirds_root, tmp_path, "train.epochs=2", "train.loggers=csv,tensorboard"),
                    progress=False)
    scalars = _check_epochs_logged(run_dir)
    state = runs.load_state(run_dir / "checkpoints" / "last_state.pt")
    steps = [s for s, _ in scalars["step/loss"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2  # one per optimizer step
    assert [v for _, v in scalars["step/lr"]] == pytest.approx([2e-3] * len(steps))
    # the per-step losses, weighted by their batches' sizes, average to the epoch's train loss
    csv_steps = [r for r in _rows(run_dir / "logs" / "csv" / "metrics.csv") if r["step/loss"]]
    assert [int(r["step"]) for r in csv_steps] == steps
    assert [float(r["step/loss"]) for r in csv_steps] == pytest.approx([v for _, v in scalars["step/loss"]], rel=1e-6)
    per_epoch, images = len(steps) // 2, state["train_images"] // 2
    sizes = [min(16, images - 16 * i) for i in range(per_epoch)]
    first = sum(float(r["step/loss"]) * n for r, n in zip(csv_steps, sizes)) / images
    assert first == pytest.approx(state["history"][0]["train_loss"], rel=1e-5)
    # the resolved config as hyper-parameters: TensorBoard's HPARAMS tab and the CSV logger's hparams.yaml
    params, tags = tensorboard_hparams(run_dir / "logs" / "tensorboard")
    assert params["train.loggers"] == "csv,tensorboard" and params["model.name"] == "test_resnet"
    assert params["train.lr"] == pytest.approx(2e-3) and params["train.milestones"] == "[30, 60, 90]"
    assert tags == ["epoch/val_acc", "epoch/val_loss"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert yaml.safe_load((run_dir / "logs" / "csv" / "hparams.yaml").read_text()) == saved


def test_resumed_classifier_run_appends_to_the_same_logs(tiny_synthbirds_root, tmp_path):
    run_dir = train(_cfg(tiny_synthbirds_root, tmp_path, "train.epochs=1", "train.loggers=csv,tensorboard"),
                    progress=False)
    steps_one = len(tensorboard_scalars(run_dir / "logs" / "tensorboard")["step/loss"])
    resumed = train(config.load(run_dir / "config.yaml", ["train.epochs=2"]), run_dir=run_dir, resume=True,
                    progress=False)
    scalars = _check_epochs_logged(resumed)
    steps = [s for s, _ in scalars["step/loss"]]
    assert steps == list(range(1, 2 * steps_one + 1))  # continued, not restarted at 1
    csv_steps = [int(r["step"]) for r in _rows(run_dir / "logs" / "csv" / "metrics.csv") if r["step/loss"]]
    assert csv_steps == steps


def test_clip_finetune_logs_steps_epochs_and_settings(tiny_synthbirds_root, tmp_path):
    import open_clip

    from fgvc.clip.finetune import run_finetune

    name = "fgvc-tiny-clip-loggers"
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "configs")
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model(name).state_dict(), weights)
    out = tmp_path / "run"
    run_finetune(name, str(weights), "synthbirds", tiny_synthbirds_root, out, epochs=2, batch_size=8, lr=1e-4,
                 device="cpu", num_workers=0, download=False, progress=False, loggers="tensorboard,csv")
    scalars = _check_epochs_logged(out)
    history = _rows(out / "history.csv")
    # history's lr is the epoch's last step's rate: the step series ends each epoch on it
    steps = scalars["step/lr"]
    assert [s for s, _ in steps] == list(range(1, len(steps) + 1))
    per_epoch = len(steps) // 2
    assert steps[per_epoch - 1][1] == pytest.approx(float(history[0]["lr"]), rel=1e-6)
    params, _ = tensorboard_hparams(out / "logs" / "tensorboard")
    assert params["model.name"] == f"clip:{name}" and params["train.epochs"] == 2
    assert params["train.lr"] == pytest.approx(1e-4) and params["clip.pretrained"] == str(weights)
    assert yaml.safe_load((out / "logs" / "csv" / "hparams.yaml").read_text())["data"]["name"] == "synthbirds"


def _gan_config(root, out, **kw):
    from fgvc.gan.config import GanConfig, GanDataConfig

    base = dict(data=GanDataConfig(name="synthbirds", root=str(root), image_size=32, num_workers=0), iterations=1,
                batch_size=8, n_dis=1, ch=8, z_dim=16, sample_every=0, checkpoint_every=1, sample_classes=2,
                device="cpu", out=str(out), loggers="csv")
    base.update(kw)
    return GanConfig(**base)


def test_gan_logs_both_losses_per_iteration_and_resumes_them(tiny_synthbirds_root, tmp_path):
    from fgvc.gan import train_gan
    from fgvc.gan.config import dump_gan_config

    run_dir = train_gan(_gan_config(tiny_synthbirds_root, tmp_path), progress=False)
    logged = _rows(run_dir / "logs" / "csv" / "metrics.csv")
    losses = _rows(run_dir / "losses.csv")
    assert [int(r["step"]) for r in logged] == [1]
    for key in ("d_loss", "g_loss"):
        assert float(logged[0][f"step/{key}"]) == pytest.approx(float(losses[0][key]), abs=1e-6)
    assert float(logged[0]["step/lr"]) == pytest.approx(2e-4)  # the rate of the first update
    hparams = yaml.safe_load((run_dir / "logs" / "csv" / "hparams.yaml").read_text())
    assert hparams == yaml.safe_load(dump_gan_config(_gan_config(tiny_synthbirds_root, tmp_path)))

    train_gan(_gan_config(tiny_synthbirds_root, tmp_path, iterations=2), progress=False, resume=run_dir)
    logged = _rows(run_dir / "logs" / "csv" / "metrics.csv")
    losses = _rows(run_dir / "losses.csv")
    assert [int(r["step"]) for r in logged] == [1, 2]
    assert [float(r["step/g_loss"]) for r in logged] == pytest.approx([float(r["g_loss"]) for r in losses], abs=1e-6)


def test_other_processes_of_a_multi_device_run_write_nothing(tmp_path):
    log = open_loggers("csv,tensorboard", tmp_path, main=False)
    log.log_hparams({"a": 1})
    log.log_step(1, 0.5, 0.1)
    log.log_epoch(1, {"val_acc": 0.5})
    log.close()
    assert not log and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("writer", ["tensorboardX", "tensorboard"])
def test_both_tensorboard_writers_fabric_may_pick_are_read_back(tmp_path, monkeypatch, writer):
    """fgvc depends on tensorboardX (small); Fabric writes through `tensorboard` instead when it is there."""
    import lightning_fabric.loggers.tensorboard as fabric_tb

    monkeypatch.setattr(fabric_tb, "_TENSORBOARD_AVAILABLE", writer == "tensorboard")
    with open_loggers("tensorboard", tmp_path, main=True) as log:
        log.log_hparams({"train": {"lr": 0.01, "milestones": [3]}, "out": "runs"})
        log.log_step(1, torch.tensor(2.5), 0.01)
        log.log_step(2, 1.5, 0.01)
        log.log_epoch(1, {"val_acc": 0.75, "note": "skipped"})
        module = type(log.loggers[0].experiment).__module__
    assert module.startswith("tensorboardX" if writer == "tensorboardX" else "torch.utils.tensorboard")
    scalars = tensorboard_scalars(tmp_path / "logs" / "tensorboard")
    assert scalars["step/loss"] == [(1, 2.5), (2, 1.5)] and scalars["epoch/val_acc"] == [(2, 0.75)]
    assert "epoch/note" not in scalars
    assert tensorboard_hparams(tmp_path / "logs" / "tensorboard")[0] == {
        "train.lr": pytest.approx(0.01), "train.milestones": "[3]", "out": "runs"}


def test_unknown_logger_is_one_sentence_with_the_closest_name(tiny_synthbirds_root, tmp_path, capsys):
    code = main(["train", *FAST, "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}",
                 "train.loggers=csv,tensorbord", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown logger 'tensorbord' (did you mean tensorboard?)" in err and "mlflow" in err
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="did you mean wandb"):
        parse_loggers("wandbb", key="loggers")
    assert parse_loggers(" CSV, tensorboard,csv ") == ["csv", "tensorboard"]
    assert parse_loggers("") == []


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_missing_logger_package_says_what_to_install(tiny_synthbirds_root, tmp_path, capsys, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed, also where it is
    code = main(["train", *FAST, "data.name=synthbirds", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}",
                 f"train.loggers=csv,{name}", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"pip install {name}" in err, err
    assert not any(tmp_path.iterdir())  # refused before anything was written
    code = main(["gan", "train", f"data.root={tiny_synthbirds_root}", f"out={tmp_path}", f"loggers={name}",
                 "--quiet"])
    assert code == 2 and f"pip install {name}" in capsys.readouterr().err and not any(tmp_path.iterdir())


def _fake_module(monkeypatch, name, **attrs):
    """A stand-in package in sys.modules (mlflow and wandb are not installed here)."""
    import importlib.machinery
    import types

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_mlflow_logs_offline_into_the_run_and_a_resume_reuses_its_mlflow_run(tmp_path, monkeypatch):
    from collections import namedtuple
    from types import SimpleNamespace

    calls = []

    class Client:
        params: dict = {}

        def __init__(self, tracking_uri):
            calls.append(("uri", tracking_uri))

        def get_experiment_by_name(self, name):
            return None

        def create_experiment(self, name):
            calls.append(("experiment", name))
            return "7"

        def create_run(self, experiment_id, run_name):
            calls.append(("run", experiment_id, run_name))
            return SimpleNamespace(info=SimpleNamespace(run_id=f"run{len(calls)}"))

        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(params=dict(Client.params)))

        def log_batch(self, run_id, metrics=(), params=()):
            Client.params.update({p.key: p.value for p in params})
            calls.append(("batch", run_id, [(m.key, m.value, m.step) for m in metrics], len(params)))

        def set_terminated(self, run_id, status):
            calls.append(("end", run_id, status))

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _fake_module(monkeypatch, "mlflow", MlflowClient=Client)
    _fake_module(monkeypatch, "mlflow.entities", Metric=namedtuple("Metric", "key value timestamp step"),
                 Param=namedtuple("Param", "key value"))
    with open_loggers("mlflow", tmp_path, main=True, run_name="r1") as log:
        log.log_hparams({"train": {"lr": 0.1}, "model": {"name": "m"}, **{f"k{i}": i for i in range(150)}})
        log.log_step(1, 0.5, 0.01)
    assert calls[0] == ("uri", (tmp_path / "logs" / "mlflow").resolve().as_uri())  # a file store in the run
    assert calls[1:3] == [("experiment", "fgvc"), ("run", "7", "r1")]
    assert [c[3] for c in calls if c[0] == "batch" and c[3]] == [100, 52]  # MLflow takes 100 params a call
    assert ("batch", "run3", [("step/loss", 0.5, 1), ("step/lr", 0.01, 1)], 0) in calls
    assert calls[-1] == ("end", "run3", "FINISHED")
    calls.clear()
    with pytest.raises(RuntimeError), open_loggers("mlflow", tmp_path, main=True, start_step=1) as log:
        log.log_hparams({"train": {"lr": 0.2}, "new": 1})  # params cannot change: only the new key
        raise RuntimeError
    assert not any(c[0] in ("experiment", "run") for c in calls)  # the same MLflow run, from logs/mlflow/run_id
    assert [c[3] for c in calls if c[0] == "batch"] == [1] and calls[-1] == ("end", "run3", "FAILED")


def test_wandb_is_offline_in_the_run_unless_told_and_keeps_its_run_id(tmp_path, monkeypatch):
    from types import SimpleNamespace

    inits, logged = [], []

    def init(**kw):
        inits.append(kw)
        return SimpleNamespace(id=kw["id"], log=lambda m, step: logged.append((dict(m), step)),
                               config=SimpleNamespace(update=lambda p, allow_val_change: logged.append(p)),
                               finish=lambda exit_code: logged.append(("finish", exit_code)))

    monkeypatch.delenv("WANDB_MODE", raising=False)
    _fake_module(monkeypatch, "wandb", init=init, util=SimpleNamespace(generate_id=lambda: "abc123"))
    with open_loggers("wandb", tmp_path, main=True, run_name="r1") as log:
        log.log_hparams({"train": {"lr": 0.1}})
        log.log_epoch(1, {"val_acc": 0.5})
    assert inits[0]["mode"] == "offline" and inits[0]["dir"] == str(tmp_path / "logs" / "wandb")
    assert inits[0]["id"] == "abc123" and inits[0]["resume"] == "allow"
    assert logged == [{"train.lr": 0.1}, ({"epoch/val_acc": 0.5, "epoch": 1.0}, 0), ("finish", 0)]
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(sys.modules["wandb"], "util", SimpleNamespace(generate_id=lambda: "other"))
    open_loggers("wandb", tmp_path, main=True, start_step=3).close()
    assert inits[1]["mode"] == "online" and inits[1]["id"] == "abc123"  # resumed into the same W&B run


@pytest.mark.slow  # two processes start torch and train: 25 to 50 s on the 2-core dev machine
def test_two_process_run_logs_once_from_the_first_process(tiny_synthbirds_root, tmp_path):
    import os
    import subprocess

    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "fgvc", "train", "--quiet", *FAST, "train.batch_size=8", "train.epochs=1",
           "train.accelerator=cpu", "train.devices=2", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
           f"out={out}", "train.loggers=csv,tensorboard"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = out.iterdir()
    assert len(list((run_dir / "logs" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    scalars = _check_epochs_logged(run_dir)
    # each process trains on half the images (rounded up) in batches of 8, a last batch of one image
    # dropped (BatchNorm); only process 0's steps are logged, once
    images = json.loads((run_dir / "metrics.json").read_text())["train_images"]
    full, rest = divmod(math.ceil(images / 2), 8)
    steps = full + (rest >= 2)
    assert [s for s, _ in scalars["step/loss"]] == list(range(1, steps + 1))


@pytest.mark.parametrize("start_step", [0, 2])
def test_reopened_logs_keep_the_steps_before_start_step_only(tmp_path, start_step):
    """A run started over (start_step 0: no finished epoch) or resumed mid-way: steps the kill left past
    the checkpoint disappear from both files, earlier ones stay."""
    with open_loggers("csv,tensorboard", tmp_path, main=True) as log:
        for step in (1, 2, 3):
            log.log_step(step, float(step), 0.1)
    with open_loggers("csv,tensorboard", tmp_path, main=True, start_step=start_step) as log:
        log.log_step(start_step + 1, 9.0, 0.1)
    expected = [(s, float(s)) for s in range(1, start_step + 1)] + [(start_step + 1, 9.0)]
    assert tensorboard_scalars(tmp_path / "logs" / "tensorboard")["step/loss"] == expected
    rows = _rows(tmp_path / "logs" / "csv" / "metrics.csv")
    assert [(int(r["step"]), float(r["step/loss"])) for r in rows] == expected
