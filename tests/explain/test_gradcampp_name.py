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
