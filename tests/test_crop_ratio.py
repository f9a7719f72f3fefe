"""data.crop_ratio: the evaluation resize is one key, and every path that scores a run's images follows it
(eval, TTA, calibration, predict, serve, explain, attack, audits, the export sidecar and the hf export's
crop_pct), as do the training loop's splits (down to the JPEG decode size), its BatchNorm re-estimation and the
linear probe; a run written before the key existed keeps 0.875."""

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torchvision.transforms.v2.functional import to_dtype

from fgvc import api, config, export
from fgvc.cli import main
from fgvc.data.base import read_rgb
from fgvc.data.transforms import EVAL_CROP_RATIO, eval_transform, load_eval_image, resize_side
from fgvc.errors import UserError
from fgvc.protocol import eval_crop
from fgvc.tta import tta_transform

SIZE = 32  # tiny_run's data.image_size


def _scaled(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as the pipelines' float [0, 1] (the same scaling, so equal bit for bit)."""
    return to_dtype(pixels, torch.float32, scale=True)


def _with_crop_ratio(tiny_run, folder: Path, ratio: float | None) -> Path:
    """tiny_run's folder (same weights) whose config.yaml says data.crop_ratio=``ratio`` (None: no such line,
    as a run written before the key existed)."""
    run = folder / f"run_{ratio}"
    shutil.copytree(tiny_run, run)
    path = run / "config.yaml"
    lines = [line for line in path.read_text().splitlines() if not line.strip().startswith("crop_ratio:")]
    if ratio is not None:
        at = lines.index("data:") + 1
        lines.insert(at, f"  crop_ratio: {ratio}")
    path.write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture(scope="module")
def half_crop_run(tiny_run, tmp_path_factory):
    """tiny_run evaluated with data.crop_ratio=0.5: images resized to 64 px, the centre 32 px kept."""
    return _with_crop_ratio(tiny_run, tmp_path_factory.mktemp("crop"), 0.5)


@pytest.fixture(scope="module")
def test_image(tiny_synthbirds_root) -> Path:
    return sorted((tiny_synthbirds_root / "CUB_200_2011" / "images").rglob("*.jpg"))[0]


def test_the_crop_ratio_sets_the_resized_side_and_the_centre_crop_pixel_for_pixel():
    # a 64 x 96 image whose pixels name their coordinates: at crop ratio 0.5 the shorter side stays 64
    # (no resampling), so the 32 px crop must be exactly rows 16-47 and columns 32-63
    y, x = torch.meshgrid(torch.arange(64), torch.arange(96), indexing="ij")
    image = torch.stack([y * 3, x * 2, (x + y) % 256]).to(torch.uint8)
    out = eval_transform(32, 0.5)(image)
    assert torch.equal(out, _scaled(image[:, 16:48, 32:64]))
    assert resize_side(448, 0.875) == 512 and resize_side(224) == 256 and resize_side(32, 1.0) == 32
    assert eval_transform(448, 0.875).decode_min_side == 512 and eval_transform(32, 0.5).decode_min_side == 64


def test_tta_crops_come_from_the_image_resized_by_the_crop_ratio():
    y, x = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    image = torch.stack([y * 3, x * 3, (x * y) % 256]).to(torch.uint8)
    views = tta_transform(32, "five-crop", 0.5)(image)
    assert views.shape == (5, 3, 32, 32)
    assert torch.equal(views[0], _scaled(image[:, :32, :32]))  # top-left corner of the 64 px image
    assert torch.equal(views[4], eval_transform(32, 0.5)(image))  # the centre view is the eval crop
    assert torch.equal(tta_transform(32, "flip", 0.5)(image), eval_transform(32, 0.5)(image))


def test_a_run_reads_its_crop_ratio_and_a_run_from_before_the_key_keeps_0875(half_crop_run, tiny_run, tmp_path):
    run = api.Run(half_crop_run)
    assert run.crop_ratio == 0.5 and eval_crop(run.eval_transform)["resize_shorter_side"] == 64
    assert eval_crop(run.dataset("test").transform) == {"input_size": 32, "resize_shorter_side": 64, "crop_ratio": 0.5}
    old = _with_crop_ratio(tiny_run, tmp_path, None)
    assert "crop_ratio" not in (old / "config.yaml").read_text()
    assert api.Run(old).crop_ratio == EVAL_CROP_RATIO == 0.875
    assert eval_crop(api.Run(old).eval_transform)["resize_shorter_side"] == round(32 / 0.875) == 37


def test_eval_scores_and_records_the_runs_crop(half_crop_run):
    from fgvc.evaluation import eval_run

    result = eval_run(half_crop_run, progress=False, device="cpu", precision="32-true")
    assert (result["protocol"]["resize_shorter_side"], result["protocol"]["crop_ratio"]) == (64, 0.5)
    saved = json.loads((half_crop_run / "eval_test.json").read_text())
    assert saved["protocol"]["crop_ratio"] == 0.5


@pytest.mark.parametrize("ratio, same_views", [(1.0, True), (0.875, False)])
def test_five_crop_tta_follows_the_crop_ratio(tiny_run, tmp_path, ratio, same_views):
    # square 32 px images at crop ratio 1 are not resized: the five 32 px crops are all the whole image, so the
    # TTA loss (log of the mean softmax) equals the plain one; at 0.875 the corners differ from the centre
    from fgvc.evaluation import eval_run

    run = _with_crop_ratio(tiny_run, tmp_path, ratio)
    result = eval_run(run, tta="five-crop", progress=False, device="cpu", precision="32-true")
    assert (result["tta"]["loss"] == pytest.approx(result["loss"], abs=1e-5)) is same_views


def test_predict_feeds_the_model_the_runs_crop(half_crop_run, test_image):
    from fgvc.predict import predict_files

    model, _ = api.load(half_crop_run)
    with torch.no_grad():
        half = model(load_eval_image(test_image, SIZE, 0.5))[0].softmax(-1)
        default = model(load_eval_image(test_image, SIZE))[0].softmax(-1)
    assert not torch.allclose(half, default, atol=1e-4)  # the two crops do give the model different inputs
    top = predict_files(half_crop_run, [test_image], topk=4)[0]["top"]
    assert all(t["prob"] == pytest.approx(float(half[t["index"]]), abs=1e-5) for t in top)


def test_serve_decodes_uploads_with_the_runs_crop(half_crop_run, test_image):
    from fgvc.serve.predictor import Predictor

    x = Predictor(half_crop_run).input(test_image.read_bytes())
    assert torch.equal(x, load_eval_image(io.BytesIO(test_image.read_bytes()), SIZE, 0.5))
    assert not torch.equal(x, load_eval_image(test_image, SIZE))


def test_explain_explains_the_runs_crop(half_crop_run, test_image, tmp_path):
    from fgvc.explain.run import explain_run

    explain_run(half_crop_run, images=[test_image], methods="gradcam", out_dir=tmp_path / "x", save_maps=True,
                device="cpu", localization=False, log=None, precision="32-true")
    shown = load_file(tmp_path / "x" / "maps.safetensors")["images"]
    assert torch.equal(shown, load_eval_image(test_image, SIZE, 0.5))


def test_the_label_noise_audit_reads_a_run_through_its_own_crop(half_crop_run):
    from fgvc.audit.embeddings import backbone
    from fgvc.audit.labelnoise import feature_pipeline

    _, size, _ = backbone(half_crop_run, None, None, 224)
    pipeline = feature_pipeline(half_crop_run, size)
    assert eval_crop(pipeline) == {"input_size": 32, "resize_shorter_side": 64, "crop_ratio": 0.5}


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_the_export_sidecar_describes_the_runs_crop(half_crop_run, tmp_path):
    out = export.export_model(half_crop_run, "torchscript", out=tmp_path / "model.pt")
    prep = json.loads(export.sidecar_path(out).read_text())["preprocessing"]
    assert (prep["resize_shorter_side"], prep["crop_ratio"], prep["center_crop"]) == (64, 0.5, 32)
    assert "resize the shorter side to 64 px" in prep["steps"]


def test_the_hf_export_crop_pct_follows_the_crop_ratio(half_crop_run, tmp_path):
    out = export.export_model(half_crop_run, "hf", out=tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    # timm's eval resize is floor(size / crop_pct): the same 64 px as fgvc's
    assert int(SIZE / cfg["pretrained_cfg"]["crop_pct"]) == 64 == cfg["fgvc"]["preprocessing"]["resize_shorter_side"]
    assert cfg["pretrained_cfg"]["crop_pct"] == pytest.approx(0.5)
    assert "| `data.crop_ratio` | 0.5 |" in (out / "README.md").read_text()


def test_hf_crop_pct_gives_timms_resize_the_same_side_for_the_fields_sizes():
    from fgvc.export_hf import crop_pct

    for size in (32, 224, 299, 384, 448):
        for ratio in (0.5, 0.8, 0.875, 0.9, 0.95, 1.0):
            assert int(size / crop_pct(size, ratio)) == resize_side(size, ratio), (size, ratio)


@pytest.mark.parametrize("value, says", [("0", "must be a fraction in (0, 1]"), ("-0.5", "must be a fraction in (0, 1]"),
                                         ("1.2", "must be a fraction in (0, 1]"), ("nan", "expects a finite number"),
                                         ("half", "expects a number")])
def test_a_bad_crop_ratio_is_one_sentence_and_exit_code_2(value, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"data.crop_ratio={value}", f"out={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert f"key 'data.crop_ratio' {says}" in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # refused before anything is written
    with pytest.raises(UserError, match="crop ratio 1.5 is not in"):
        resize_side(224, 1.5)


def test_geometric_and_random_crop_together_are_refused_in_one_sentence(capsys):
    assert main(["train", "aug.geometric=true", "aug.random_crop=true"]) == 2
    err = capsys.readouterr().err
    assert "aug.geometric and aug.random_crop" in err and err.count("\n") == 1
    with pytest.raises(UserError, match="set one of them to false"):
        config.load(None, ["aug.geometric=true", "aug.random_crop=true"])


@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory) -> Path:
    """2 classes x 4 synthbirds JPEGs of 256 px: large enough for a reduced DCT decode."""
    from fgvc.data import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("large"), classes=2, per_class=4, size=256, seed=0)


def test_the_training_splits_decode_jpegs_for_the_configs_crop(large_jpegs):
    # at data.crop_ratio=0.25 a 32 px crop comes from the image resized to 128 px: a 256 px JPEG must be decoded
    # at 128 px or more (its 1/2 DCT scale), as `fgvc eval` and `fgvc predict` decode it; the 0.875 side (37 px)
    # would let the decoder stop at 64 px, whose upsampled pixels differ
    from fgvc.train.splits import build_splits
    from fgvc.train.tricks import train_inputs

    cfg = config.load(None, ["data.name=synthbirds", f"data.root={large_jpegs}", "data.image_size=32",
                             "data.crop_ratio=0.25", "data.val_fraction=0.25"])
    splits = build_splits(cfg, train_inputs(cfg), log=lambda _: None)
    for ds in (splits.train, splits.val, splits.test):  # no train augmentation: the evaluation crop
        sample = ds.samples[0]
        assert torch.equal(ds[0][0], load_eval_image(sample.path, SIZE, 0.25)[0]), ds.split
    blurred = eval_transform(SIZE, 0.25)(read_rgb(splits.test.samples[0].path, 37))
    assert not torch.equal(splits.test[0][0], blurred)  # the decode size shows in the pixels


def test_batchnorm_statistics_are_measured_on_the_configs_crop(tiny_synthbirds_root, tmp_path, monkeypatch):
    from fgvc.data import build_dataset
    from fgvc.models import batchnorm
    from fgvc.train import train

    class Measured(Exception):
        pass

    seen = []

    def measure(model, batches):
        seen.extend(x for batch in batches for x in batch)
        raise Measured  # what was measured is all this test needs

    monkeypatch.setattr(batchnorm, "reestimate_statistics", measure)
    cfg = config.load(None, ["model.name=test_resnet", "model.batchnorm=reestimate", "data.name=synthbirds",
                             f"data.root={tiny_synthbirds_root}", f"data.image_size={SIZE}", "data.crop_ratio=0.5",
                             "data.num_workers=0", f"out={tmp_path}"])
    with pytest.raises(Measured):
        train(cfg, progress=False)

    def crops(ratio):
        ds = build_dataset("synthbirds", tiny_synthbirds_root, "train", eval_transform(SIZE, ratio),
                           cfg.data.val_fraction, cfg.train.seed)
        return [ds[i][0] for i in range(len(ds))]

    half, default = crops(0.5), crops(EVAL_CROP_RATIO)
    assert seen and all(any(torch.equal(x, c) for c in half) for x in seen)
    assert not any(torch.equal(x, c) for x in seen for c in default)


def test_the_linear_probe_reads_images_through_the_configs_crop(tiny_synthbirds_root, tmp_path):
    from fgvc.train.probe import run_probe

    cfg = config.load(None, ["model.name=test_resnet", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                             f"data.image_size={SIZE}", "data.crop_ratio=0.5", "train.accelerator=cpu"])
    protocol = run_probe(cfg, tmp_path / "probe", progress=False)["protocol"]  # read from the pipeline it ran
    assert (protocol["input_size"], protocol["resize_shorter_side"], protocol["crop_ratio"]) == (SIZE, 64, 0.5)
