"""Grad-CAM++ is what its public name runs (Chattopadhay et al. 2018), not plain Grad-CAM."""

import torch
from explain_helpers import make_squares, tiny_classifier

from fgvc.explain import METHODS, explain, gradcam


def test_the_name_gradcam_plus_plus_runs_gradcam_plus_plus():
    model = tiny_classifier().eval()
    x, y, _ = make_squares(4, seed=3)
    plus = explain(model, x, "gradcam++", y)
    assert torch.allclose(plus, gradcam(model, x, y, method="gradcam++"))
    plain = explain(model, x, "gradcam", y)
    assert torch.allclose(plain, gradcam(model, x, y, method="gradcam"))
    # the two weightings differ on these maps, so a name wired to the other method shows
    assert (plus - plain).abs().max() > 1e-3
    assert torch.allclose(METHODS["gradcam++"](model, x, y), plus)


def test_fgvc_explain_method_gradcam_plus_plus_saves_grad_cam_plus_plus_maps(tiny_synthbirds_root, tmp_path):
    from safetensors.torch import load_file

    import fgvc
    from fgvc import config
    from fgvc.cli import main
    from fgvc.train import train

    cfg = config.load(None, ["model.name=test_resnet", "data.image_size=64", "train.epochs=1", "data.num_workers=0",
                             "train.batch_size=16", "train.precision=32-true", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                             f"out={tmp_path}"])
    run = train(cfg, progress=False)
    out = tmp_path / "explain"
    assert main(["explain", str(run), "--limit", "3", "--method", "gradcam,gradcam++", "--save-maps",
                 "--out", str(out)]) == 0
    saved = load_file(str(next(out.glob("*.safetensors"))))
    model, _ = fgvc.load(run)
    expected = gradcam(model, saved["images"], saved["pred"], method="gradcam++")
    assert torch.allclose(saved["maps.gradcam++"], expected, atol=1e-5)
    assert (saved["maps.gradcam++"] - saved["maps.gradcam"]).abs().max() > 1e-3
