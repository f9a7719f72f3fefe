"""GAN training: the discriminator learns, the generator becomes class-conditional, the run
directory holds what it promises, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import csv
import json
import os
import stat

import pytest
import torch
from gan_helpers import BlobDataset, class_mean_colours, tiny_config
from safetensors.torch import load_file

from fgvc.errors import UserError
from fgvc.gan import load_gan_config, load_generator, sample, sample_dataset, train_gan
from fgvc.gan.checkpoint import latest_checkpoint, load_state


def _losses(run_dir) -> list[dict]:
    with (run_dir / "losses.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_discriminator_hinge_loss_falls_from_its_start(blobs, tmp_path):
    # the seed's recipe (n_dis 5, Adam 2e-4, betas (0, 0.9)) on a tiny model
    cfg = tiny_config(tmp_path, iterations=16, n_dis=5, sample_every=0, checkpoint_every=16)
    d = [row["d_loss"] for row in _losses(train_gan(cfg, blobs, progress=False))]
    assert len(d) == 16
    start, end = sum(d[:3]) / 3, sum(d[-4:]) / 4
    assert start > 1.0, f"an untrained discriminator should sit near the hinge value 2, got {start:.2f}"
    assert end < start - 0.5, f"discriminator loss did not fall: {start:.2f} -> {end:.2f}"


def test_training_makes_the_generator_class_conditional(blobs, tmp_path):
    # at initialisation every class's gain is 1 and bias 0, so G(z, y) ignores y
    run = train_gan(tiny_config(tmp_path, iterations=6), blobs, progress=False)
    g = load_generator(run, ema=False)
    per_class = sample(g, [0, 1, 2], n=4, seed=0).view(3, 4, 3, 32, 32)
    assert (per_class[0] - per_class[1]).abs().mean() > 1e-3
    assert (per_class[1] - per_class[2]).abs().mean() > 1e-3


def test_generated_classes_take_the_colours_of_their_real_classes(tmp_path):
    # one D update per G update and lr 1e-3 so the classes are learnt in 40 iterations (~5 s);
    # with the seed's n_dis 5 and lr 2e-4 this toy set needs far longer (blobs appear first, classes later)
    blobs = BlobDataset(per_class=16, size=32, seed=0)
    cfg = tiny_config(tmp_path, iterations=40, batch_size=16, n_dis=1, ch=16, lr=1e-3,
                      sample_every=0, checkpoint_every=40)
    run = train_gan(cfg, blobs, progress=False)
    images = torch.stack([x for x, _ in blobs.items])
    real = class_mean_colours(images, torch.tensor([y for _, y in blobs.items]), 3)
    fake = sample(load_generator(run), [0, 1, 2], n=64, seed=0).view(3, 64, 3, 32, 32).mean(dim=(1, 3, 4))
    nearest = torch.cdist(fake, real).argmin(dim=1)
    assert nearest.tolist() == [0, 1, 2], f"generated class colours {fake.tolist()} vs real {real.tolist()}"


def test_train_gan_loads_the_configured_dataset(tiny_synthbirds_root, tmp_path):
    from fgvc.data import build_dataset

    cfg = tiny_config(tmp_path, iterations=2)
    cfg.data.name, cfg.data.root = "synthbirds", str(tiny_synthbirds_root)
    run = train_gan(cfg, progress=False)
    expected = build_dataset("synthbirds", tiny_synthbirds_root, "train", None, cfg.data.val_fraction, cfg.seed)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["class_names"] == expected.class_names and meta["train_images"] == len(expected)


def test_run_directory_holds_config_losses_samples_checkpoints_and_metrics(tiny_run):
    cfg = load_gan_config(tiny_run / "config.yaml")
    assert cfg.iterations == 4 and cfg.data.image_size == 32 and cfg.ch == 8
    assert [r["iteration"] for r in _losses(tiny_run)] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tiny_run / "samples").iterdir()) == ["iter_000002.png", "iter_000004.png"]
    assert (tiny_run / "losses.png").stat().st_size > 1000
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["task"] == "gan" and metrics["iterations"] == 4 and metrics["iterations_per_second"] > 0
    assert metrics["final_d_loss"] == pytest.approx(sum(r["d_loss"] for r in _losses(tiny_run)) / 4, abs=1e-5)
    meta = json.loads((tiny_run / "meta.json").read_text())
    assert meta["class_names"] == ["red_blob", "green_blob", "blue_blob"]
    p = metrics["protocol"]
    assert p["task"] == "gan" and p["split_sizes"] == {cfg.data.split: metrics["train_images"]}
    assert p["seed"] == cfg.seed and p["pretrained"] == {"source": "scratch"} and p["generated_size"] == 32
    folder = latest_checkpoint(tiny_run)
    assert folder.name == "iter_000004"
    assert {p.name for p in folder.iterdir()} == {"G.safetensors", "G_ema.safetensors", "D.safetensors", "state.pt"}
    assert load_state(folder)["iteration"] == 4  # loads with weights_only=True
    assert not list(tiny_run.rglob("*.tmp")) and not list((tiny_run / "checkpoints").glob(".*"))


def test_resume_continues_the_iteration_count_and_ends_where_an_uninterrupted_run_does(blobs, tmp_path):
    # decay_start 1: the lr schedule must not depend on the first leg's shorter length
    full = train_gan(tiny_config(tmp_path / "a", iterations=4, decay_start=1.0), blobs, progress=False)
    half = train_gan(tiny_config(tmp_path / "b", iterations=2, decay_start=1.0), blobs, progress=False)
    assert json.loads((half / "metrics.json").read_text())["iterations"] == 2
    resumed = train_gan(tiny_config(tmp_path / "b", iterations=4, decay_start=1.0), blobs, progress=False,
                        resume=half)
    assert resumed == half
    assert [r["iteration"] for r in _losses(resumed)] == [1, 2, 3, 4]
    assert json.loads((resumed / "metrics.json").read_text())["iterations"] == 4
    flat = [v for r in _losses(resumed) for v in (r["d_loss"], r["g_loss"])]
    assert flat == pytest.approx([v for r in _losses(full) for v in (r["d_loss"], r["g_loss"])], abs=1e-5)
    for name in ("G", "G_ema", "D"):
        a = load_file(str(latest_checkpoint(full) / f"{name}.safetensors"))
        b = load_file(str(latest_checkpoint(resumed) / f"{name}.safetensors"))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


def test_resume_refuses_a_different_architecture(blobs, tiny_run, tmp_path):
    with pytest.raises(UserError, match="cannot resume .* ch"):
        train_gan(tiny_config(tmp_path, iterations=6, ch=16), blobs, progress=False, resume=tiny_run)


def test_images_of_the_wrong_size_are_a_user_error(blobs, tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.data.image_size = 64
    with pytest.raises(UserError, match=r"shape \(3, 64, 64\)"):
        train_gan(cfg, blobs, progress=False)


def test_keep_checkpoints_zero_keeps_every_checkpoint_and_the_default_keeps_two(blobs, tmp_path):
    every = train_gan(tiny_config(tmp_path / "a", iterations=6, keep_checkpoints=0), blobs, progress=False)
    newest = train_gan(tiny_config(tmp_path / "b", iterations=6), blobs, progress=False)
    assert sorted(p.name for p in (every / "checkpoints").glob("iter_*")) == [
        "iter_000002", "iter_000004", "iter_000006"]
    assert sorted(p.name for p in (newest / "checkpoints").glob("iter_*")) == ["iter_000004", "iter_000006"]


def test_run_files_and_folders_get_the_modes_open_and_mkdir_give(tiny_run, tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    samples = sample_dataset(tiny_run, per_class=1, out_dir=tmp_path / "generated")
    files = [p for p in [*tiny_run.rglob("*"), *samples.rglob("*")] if p.is_file()]
    folders = [tiny_run / "checkpoints" / "iter_000004", samples, samples / "train" / "red_blob"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~umask}
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o777 & ~umask}


def test_a_first_interrupt_saves_a_checkpoint_that_resumes_where_an_uninterrupted_run_ends(blobs, tmp_path,
                                                                                            monkeypatch, capsys):
    import signal

    import fgvc.gan.train as gan_train

    full = train_gan(tiny_config(tmp_path / "a", iterations=4, decay_start=1.0), blobs, progress=False)
    real_iteration, calls = gan_train.train_iteration, []

    def interrupted_in_the_second(*args):
        calls.append(1)
        if len(calls) == 2:  # ^C in the middle of iteration 2, far from the next periodic checkpoint (100)
            os.kill(os.getpid(), signal.SIGINT)
        return real_iteration(*args)

    monkeypatch.setattr(gan_train, "train_iteration", interrupted_in_the_second)
    cfg = tiny_config(tmp_path / "b", iterations=4, decay_start=1.0, checkpoint_every=100)
    before = signal.getsignal(signal.SIGINT)  # the default, or what an earlier test in this process left
    with pytest.raises(KeyboardInterrupt) as stopped:
        train_gan(cfg, blobs, progress=False)
    assert "stopping after this iteration" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # put back as it was
    (run,) = (tmp_path / "b" / "runs").iterdir()
    assert stopped.value.run_dir == run  # the CLI names it: `fgvc gan train --resume <run>`
    assert latest_checkpoint(run).name == "iter_000002" and len(calls) == 2
    monkeypatch.setattr(gan_train, "train_iteration", real_iteration)
    resumed = train_gan(cfg, blobs, progress=False, resume=run)
    for name in ("G", "G_ema", "D"):
        a = load_file(str(latest_checkpoint(full) / f"{name}.safetensors"))
        b = load_file(str(latest_checkpoint(resumed) / f"{name}.safetensors"))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


def test_resuming_a_run_without_a_checkpoint_says_it_starts_over(blobs, tmp_path, capsys):
    import shutil

    run = train_gan(tiny_config(tmp_path, iterations=1), blobs, progress=False)
    shutil.rmtree(run / "checkpoints")  # as a run stopped before its first checkpoint leaves it
    train_gan(tiny_config(tmp_path, iterations=1), blobs, progress=True, resume=run)
    assert "has no checkpoint yet: training starts at iteration 0" in capsys.readouterr().err
