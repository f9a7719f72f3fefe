import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from fgvc.explain.overlay import overlay, save_grid, save_panel


def test_overlay_blends_image_and_jet_colours():
    image = torch.rand(3, 8, 8)
    heat = torch.linspace(0, 1, 64).reshape(8, 8)
    hwc = image.permute(1, 2, 0).numpy()
    assert np.allclose(overlay(image, heat, alpha=0.0), hwc)
    jet = colormaps["jet"](heat.numpy())[..., :3]
    assert np.allclose(overlay(image, heat, alpha=1.0), jet)
    mixed = overlay(image, heat, alpha=0.4)
    assert np.allclose(mixed, 0.6 * hwc + 0.4 * jet) and mixed.min() >= 0 and mixed.max() <= 1


def test_panel_and_grid_are_pngs_that_grow_with_methods_and_rows(tmp_path):
    img = torch.rand(3, 32, 32)
    maps = {"cam": torch.rand(32, 32), "gradcam": torch.rand(32, 32)}
    one = save_panel(img, {"cam": maps["cam"]}, "a", "b", tmp_path / "one.png")
    two = save_panel(img, maps, "a", "a", tmp_path / "two.png")
    with Image.open(one) as a, Image.open(two) as b:
        assert a.format == b.format == "PNG"
        assert b.width > a.width  # one column more
    grid = save_grid([img] * 3, {m: torch.stack([v] * 3) for m, v in maps.items()}, ["a"] * 3, [None] * 3,
                     tmp_path / "grid.png")
    with Image.open(grid) as g, Image.open(two) as b:
        assert g.height > 2 * b.height  # three rows
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files
