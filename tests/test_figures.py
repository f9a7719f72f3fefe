"""The figures a researcher reads, tested on what they draw, not on file sizes:
training curves, confusion matrix, attack gallery, CAM panels, GAN sample grid (study titles:
test_study_titles.py)."""

import math

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from torch import nn


def _draw(fig):
    FigureCanvasAgg(fig).draw()  # tick locations and labels are final only after a draw
    return fig


def _history(n=12, drop_after=9):
    val = [0.1, 0.2, 0.35, 0.5, 0.62, 0.61, 0.66, 0.66, 0.65, 0.64, 0.66, 0.65]
    return [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 94.0 if e == 1 else 1.5 / e, "train_acc": min(0.1 * e, 1.0),
             "val_acc": val[e - 1], "lr": 2e-3 if e <= drop_after else 2e-4} for e in range(1, n + 1)]


def _vlines(ax):
    return [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]


# --- curves.png -------------------------------------------------------------------------------------

def test_curves_log_loss_integer_epochs_title_best_epoch_and_lr_drop():
    from fgvc.train.summary import curves_figure as _curves_figure

    fig = _draw(_curves_figure(_history(), "resnet18-synthbirds-run"))
    loss, acc = fig.axes[:2]
    assert loss.get_yscale() == "log"  # a val loss of 94 at epoch 1 must not flatten the rest
    short = _draw(_curves_figure(_history(3), "three-epochs"))  # matplotlib would tick 1.0, 1.25, 1.5 ...
    for ax in (loss, acc, *short.axes[:2]):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert "resnet18-synthbirds-run" in fig._suptitle.get_text()
    assert "epoch 7" in fig._suptitle.get_text()  # first epoch of the best val accuracy
    xs = sorted({float(line.get_xdata()[0]) for line in _vlines(acc)})
    assert xs == [7.0, 9.5]  # best epoch, and the lr drop between epochs 9 and 10
    labels = [line.get_label() for line in _vlines(acc)]
    assert any("best" in label for label in labels) and any("lr" in label for label in labels)


def test_curves_of_a_one_epoch_run_have_markers():
    from fgvc.train.summary import curves_figure as _curves_figure

    fig = _draw(_curves_figure(_history(1), "one-epoch"))
    curves = [line for line in fig.axes[0].get_lines() if line.get_label() in ("train", "val")]
    assert len(curves) == 2 and all(line.get_marker() not in (None, "", "None") for line in curves)
    assert "1 epoch " in fig._suptitle.get_text()


def test_plot_curves_titles_the_png_with_its_run_directory(tmp_path, monkeypatch):
    from fgvc.train import summary

    seen = {}
    monkeypatch.setattr(summary, "curves_figure", lambda history, name: seen.setdefault("name", name) and None)
    monkeypatch.setattr(summary.runs, "save_figure", lambda fig, path, **kw: path)
    (tmp_path / "my-run").mkdir()
    summary.plot_curves(_history(), tmp_path / "my-run" / "curves.png")
    assert seen["name"] == "my-run"


# --- confusion matrix -------------------------------------------------------------------------------

CUB_NAMES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "009.Brewer_Blackbird",
             "150.Sage_Thrasher_with_a_remarkably_long_made_up_name"]


def test_confusion_labels_are_folder_ids_and_whole_words():
    from fgvc.metrics import confusion_figure

    fig = _draw(confusion_figure(torch.eye(4, dtype=torch.long) * 5 + 1, CUB_NAMES, title="run-x: test split"))
    ax = fig.axes[0]
    labels = [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()]
    assert [label.split()[0] for label in labels] == ["1", "2", "9", "150"]  # the folder prefixes, 1-based
    assert labels[0] == "1 Black footed Albatross"
    words = set(" ".join(n.split(".", 1)[1].replace("_", " ") for n in CUB_NAMES).split())
    for label in labels:  # shortened at a word boundary: every word shown is a whole word
        assert all(w in words for w in label.split()[1:] if w != "...")
    assert "run-x: test split" in ax.get_title()


def test_confusion_with_many_classes_ticks_one_based_ids():
    from fgvc.metrics import confusion_figure

    names = [f"class_{i}" for i in range(50)]  # no folder prefix: position + 1
    fig = _draw(confusion_figure(torch.eye(50, dtype=torch.long), names))
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    locs = [int(x) for x in ax.get_xticks() if 0 <= x < 50]
    assert shown and shown == [str(x + 1) for x in locs]


# --- attack gallery ---------------------------------------------------------------------------------

@pytest.fixture
def linear_model_and_examples():
    from fgvc.robust.sweep import evaluate_attack

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    x = torch.rand(32, 3, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    result = evaluate_attack(model, [(x, y)], "fgsm", [0.0, 0.01, 0.05, 0.2], progress=False)
    return model, result


def test_gallery_rows_show_the_same_images_at_every_eps(linear_model_and_examples):
    from fgvc.robust.plots import attack_images, gallery_rows

    model, result = linear_model_and_examples
    columns, rows = gallery_rows(result["examples"], attack_images(model, "fgsm", result["settings"]), rows=3)
    assert columns == [0.01, 0.05, 0.2] and len(rows) == 3
    for row in rows:
        signs = []
        for eps in columns:
            image, _ = row["adversarial"][eps]
            delta = image - row["original"]
            assert delta.abs().max() <= eps + 1e-6  # each column attacks this row's own image
            inside = (row["original"] > 0.2) & (row["original"] < 0.8)  # no clamping there
            signs.append(torch.sign(delta[inside]))
        assert all(torch.equal(signs[0], s) for s in signs[1:])  # FGSM: one direction, scaled by eps


def test_gallery_figure_has_clean_eps_and_perturbation_columns_and_no_gaps(linear_model_and_examples):
    from fgvc.robust.plots import attack_images, gallery_figure, gallery_rows

    model, result = linear_model_and_examples
    columns, rows = gallery_rows(result["examples"], attack_images(model, "fgsm", result["settings"]), rows=3)
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
    fig = gallery_figure(columns, rows, names, title="run-x: FGSM on the test split")
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == len(fig.axes) == 3 * (len(columns) + 2)  # every cell filled: no ragged columns
    top = [fig.axes[j].get_title() for j in range(len(columns) + 2)]
    assert top[0].startswith("clean") and top[-1].startswith("perturbation")
    assert [t.split("\n")[0] for t in top[1:-1]] == ["eps = 0.01", "eps = 0.05", "eps = 0.2"]
    assert "run-x: FGSM" in fig._suptitle.get_text() and "red" in fig._suptitle.get_text()  # labels explained
    assert fig.axes[0].get_ylabel().startswith("true:")
    assert all("…" not in ax.get_title() for ax in fig.axes)  # names wrapped, not cut mid-word


def test_attack_run_gallery_attacks_its_images_at_every_eps(tiny_run, monkeypatch):
    from fgvc.robust import run as robust_run

    seen = {}

    def capture(examples, class_names, path, rows=5, attack_fn=None, title=""):
        seen.update(attack_fn=attack_fn, title=title)
        return path

    monkeypatch.setattr(robust_run, "save_gallery", capture)
    robust_run.attack_run(tiny_run, "fgsm", [0.0, 0.1, 0.3], limit=16, progress=False, device="cpu")
    if seen:  # the tiny run may resist every attack on 16 images; then there is no gallery
        assert seen["attack_fn"] is not None and tiny_run.name in seen["title"]


# --- CAM panels ---------------------------------------------------------------------------------------

def test_cam_panel_names_the_class_draws_the_box_and_a_colour_bar():
    from fgvc.explain.overlay import grid_figure, panel_figure

    image = torch.rand(3, 32, 32)
    maps = {"cam": torch.rand(32, 32), "gradcam": torch.rand(32, 32)}
    box = torch.tensor([[4.0, 6.0, 20.0, 28.0]])
    fig = panel_figure(image, maps, "Laysan Albatross", "Sooty Albatross", box=box)
    overlays = [ax for ax in fig.axes if ax.images][1:]
    assert len(overlays) == 2
    assert all("Sooty Albatross" in ax.get_title() for ax in overlays)  # the explained (predicted) class
    assert all(any(isinstance(p, Rectangle) for p in ax.patches) for ax in fig.axes if ax.images)
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    no_box = panel_figure(image, maps, "a", "a", box=torch.full((1, 4), math.nan))
    assert not any(ax.patches for ax in no_box.axes if ax.images)
    grid = grid_figure([image, image], {m: torch.stack([v, v]) for m, v in maps.items()}, ["a", "b"], ["a", "a"],
                       boxes=[box, None], title="run-x")
    with_patches = [ax for ax in grid.axes if ax.images and ax.patches]
    assert len(with_patches) == 3  # first row only: image + 2 overlays
    assert sum(ax.get_label() == "<colorbar>" for ax in grid.axes) == 1
    assert "run-x" in grid._suptitle.get_text()


def test_small_feature_map_warns_and_names_a_useful_resolution():
    from fgvc.explain.run import feature_map_side, small_feature_map
    from fgvc.models.factory import create_model

    model = create_model("resnet18", num_classes=3).eval()
    assert feature_map_side(model, torch.rand(1, 3, 64, 64)) == (2, 2)
    warning = small_feature_map(model, torch.rand(1, 3, 64, 64), 64)
    assert warning and "2x2" in warning and "data.image_size=224" in warning
    assert small_feature_map(model, torch.rand(1, 3, 224, 224), 224) is None
    one = small_feature_map(model, torch.rand(1, 3, 32, 32), 32)  # 1x1: a flat map, not "a blend of 1 cells"
    assert "1x1" in one and "one cell" in one and "blend" not in one


def test_explain_run_warns_and_draws_the_boxes_of_the_split(tiny_run, monkeypatch, tmp_path):
    from fgvc.explain import run as explain_run_mod

    seen = {}

    def capture_grid(images, maps, true_names, pred_names, path, alpha=0.5, boxes=None, title=""):
        seen.update(boxes=boxes, title=title)
        return path

    monkeypatch.setattr(explain_run_mod, "save_grid", capture_grid)
    monkeypatch.setattr(explain_run_mod, "save_panel", lambda *a, **k: None)
    logged = []
    summary = explain_run_mod.explain_run(tiny_run, limit=2, out_dir=tmp_path, localization=False, log=logged.append)
    assert summary["warnings"] and any(line.startswith("warning: the last feature map is 1x1") for line in logged)
    assert len(seen["boxes"]) == 2 and all(b is not None and not torch.isnan(b).all() for b in seen["boxes"])
    assert tiny_run.name in seen["title"]


# --- GAN sample grid ----------------------------------------------------------------------------------

def test_gan_sample_grid_labels_each_row_with_its_class():
    from fgvc.gan.synthesize import sample_grid_figure

    images = torch.rand(3 * 4, 3, 16, 16)
    fig = _draw(sample_grid_figure(images, ["001.Black_footed_Albatross", "002.Laysan_Albatross", "x"], 4, "gan-run"))
    ax = fig.axes[0]
    assert [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()] == [
        "Black footed Albatross", "Laysan Albatross", "x"]
    centres = list(ax.get_yticks())
    assert centres == [2 + 8, 2 + 18 + 8, 2 + 36 + 8]  # the middle of each row of 16 px images, 2 px padding
    assert ax.get_title() == "gan-run"


def test_gan_training_grid_is_labelled(tmp_path):
    from fgvc.gan.networks import Generator
    from fgvc.gan.synthesize import save_sample_grid

    g = Generator(3, 32, 8, 16)
    path = save_sample_grid(g, [0, 2], torch.randn(2, 16), tmp_path / "g.png", class_names=["a", "b", "c"],
                            title="t")
    assert path.is_file()
