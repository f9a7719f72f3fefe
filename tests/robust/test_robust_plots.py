"""Fig. 9/11 curves and the Fig. 10 gallery are written as real images."""

import matplotlib.image as mpimg
import torch

from fgvc.robust.plots import plot_accuracy_vs_eps, save_gallery


def test_accuracy_plot_draws_one_curve_per_run(tmp_path):
    curves = {"standard": {0.0: 0.95, 0.1: 0.3, 0.2: 0.1}, "adversarial": {0.0: 0.9, 0.1: 0.7, 0.2: 0.4}}
    one = mpimg.imread(plot_accuracy_vs_eps({"standard": curves["standard"]}, tmp_path / "one.png"))
    two = mpimg.imread(plot_accuracy_vs_eps(curves, tmp_path / "plots" / "two.png"))
    assert two.shape[0] > 100 and two.shape[1] > 100
    assert not (one.shape == two.shape and (one == two).all())


def example(true, pred):
    torch.manual_seed(true)
    image = torch.rand(3, 12, 12)
    return {"original": image, "adversarial": image.clamp(0.1, 0.9), "true": true, "pred": pred}


def fake_attack(x, y, eps):
    return (x + eps).clamp(0, 1), (y + 1) % 3 if eps else y


def test_gallery_has_a_column_per_eps_and_a_row_per_example(tmp_path):
    # the images of the largest eps with examples, attacked at every eps: a column per eps, a row per image
    examples = {0.0: [], 0.05: [example(0, 1), example(1, 2)], 0.1: [example(2, 0)], 0.2: []}
    names = ["Black-footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    wide = mpimg.imread(save_gallery(examples, names, tmp_path / "gallery.png", attack_fn=fake_attack))
    narrow = mpimg.imread(save_gallery({0.05: examples[0.05]}, names, tmp_path / "narrow.png", attack_fn=fake_attack))
    short = mpimg.imread(save_gallery({0.05: examples[0.05]}, None, tmp_path / "short.png", rows=1,
                                      attack_fn=fake_attack))
    alone = mpimg.imread(save_gallery(examples, names, tmp_path / "alone.png"))  # no attack_fn: the largest eps only
    assert wide.shape[1] > narrow.shape[1] * 1.4  # clean | 0.05 | 0.1 | 0.2 | perturbation vs clean | 0.05 | perturbation
    assert short.shape[0] < narrow.shape[0]
    assert alone.shape[1] < wide.shape[1]
