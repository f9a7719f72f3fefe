import json

import pytest
import torch
from safetensors.torch import load_file

from fgvc import config, runs
from fgvc.data import synthetic
from fgvc.errors import UserError
from fgvc.explain.run import explain_run
from fgvc.models import create_model


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("data") / "synthbirds", classes=4, per_class=6, size=64)


def make_run(run_dir, model_name, data_root, model=None, classes=4):
    """A run directory as `fgvc train` leaves it, with the given (or random) weights."""
    cfg = config.load(None, [f"model.name={model_name}", "data.name=synthbirds", f"data.root={data_root}",
                             "data.image_size=64"])
    run_dir.mkdir(parents=True)
    runs.write_text_atomic(run_dir / "config.yaml", config.dump(cfg))
    runs.write_json_atomic(run_dir / "classes.json", [f"class_{i}" for i in range(classes)])
    torch.manual_seed(0)
    model = model or create_model(model_name, classes, image_size=64)
    runs.save_weights(model.state_dict(), run_dir / "checkpoints" / "best.safetensors")
    return run_dir


def test_explain_run_writes_panels_grid_maps_and_localisation(synth_root, tmp_path, capsys):
    run_dir = make_run(tmp_path / "run", "test_resnet", synth_root)
    out = explain_run(run_dir, limit=5, save_maps=True)
    folder = run_dir / "explain"
    assert out["methods"] == ["cam", "gradcam"] and not out["notes"]
    assert len(out["panels"]) == 5 and all((folder / p).is_file() for p in out["panels"])
    assert (folder / "grid.png").is_file()
    maps = load_file(str(folder / "maps.safetensors"))
    assert maps["maps.cam"].shape == maps["maps.gradcam"].shape == (5, 64, 64)
    assert maps["maps.cam"].min() >= 0 and maps["maps.cam"].max() <= 1
    assert maps["images"].shape == (5, 3, 64, 64) and maps["label"].shape == (5,)
    assert len({p["true"] for p in out["predictions"]}) > 1  # spread over the split, not one class
    loc = json.loads((folder / "localization.json").read_text())
    assert set(loc["methods"]) == {"cam", "gradcam"}
    assert loc["methods"]["cam"]["n"] == 12  # the whole test split, not just the pictured images
    assert 0 <= loc["methods"]["gradcam"]["energy_in_box"] <= 1
    assert "| gradcam |" in capsys.readouterr().out


def test_vit_run_skips_cam_by_default_and_refuses_it_when_asked(synth_root, tmp_path):
    run_dir = make_run(tmp_path / "vit", "test_vit", synth_root)
    out = explain_run(run_dir, limit=2, out_dir=tmp_path / "out", localization=False, log=None)
    assert out["methods"] == ["gradcam"] and "CAM skipped" in out["notes"][0]
    assert (tmp_path / "out" / "grid.png").is_file() and not (run_dir / "explain").exists()
    with pytest.raises(UserError, match="Grad-CAM"):
        explain_run(run_dir, methods="cam,gradcam", limit=2, log=None)


def test_explain_run_on_image_files_names_panels_after_them(synth_root, tmp_path):
    run_dir = make_run(tmp_path / "run", "test_resnet", synth_root)
    images = sorted((synth_root / "CUB_200_2011" / "images").rglob("*.jpg"))[:2]
    out = explain_run(run_dir, images=images, methods=["gradcam++"], log=None)
    assert out["methods"] == ["gradcam++"] and out["localization"] is None
    assert [p.split("/")[-1][4:-4] for p in out["panels"]] == [p.stem for p in images]
    assert all(p["true"] is None for p in out["predictions"])


def test_unknown_method_and_missing_run_are_user_errors(synth_root, tmp_path):
    run_dir = make_run(tmp_path / "run", "test_resnet", synth_root)
    with pytest.raises(UserError, match="gradcam"):
        explain_run(run_dir, methods="scorecam", log=None)
    with pytest.raises(UserError, match="not an fgvc run directory"):
        explain_run(tmp_path / "nothing", log=None)


def test_cnn_whose_head_is_not_gap_linear_gets_gradcam_and_a_note(synth_root, tmp_path):
    run_dir = make_run(tmp_path / "convnext", "test_convnext", synth_root)  # LayerNorm after the pooling
    out = explain_run(run_dir, limit=2, localization=False, log=None)
    assert out["methods"] == ["gradcam"] and "CAM skipped" in out["notes"][0]
    with pytest.raises(UserError, match="global average pooling"):
        explain_run(run_dir, methods=["cam"], limit=2, log=None)


def test_a_dataset_without_boxes_says_why_there_is_no_localisation_table(synth_root, tmp_path):
    import shutil

    root = shutil.copytree(synth_root, tmp_path / "noboxes")
    (root / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    run_dir = make_run(tmp_path / "run", "resnet18", root)
    said = []
    out = explain_run(run_dir, limit=2, log=said.append)
    assert out["localization"] is None and not (tmp_path / "run" / "explain" / "localization.json").exists()
    assert any("no localisation table" in s and "no bounding boxes" in s for s in said), said


def test_attention_on_a_run_without_attention_maps_is_refused_before_anything_is_drawn(synth_root, tmp_path):
    run_dir = make_run(tmp_path / "run", "test_resnet", synth_root)  # plain: no attention branch
    said = []
    with pytest.raises(UserError, match="method.name=wsdan or cal"):
        explain_run(run_dir, methods="gradcam,attention", limit=2, log=said.append)
    assert not (run_dir / "explain").exists() and said == []  # no folder, no warning before the refusal
