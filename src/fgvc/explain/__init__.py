"""Where a model looks: CAM, Grad-CAM and Grad-CAM++ maps, overlays, and localisation scores against boxes."""

from fgvc.explain.cam import METHODS, cam, explain, gradcam, normalize_maps, supports_cam
from fgvc.explain.localization import (
    box_area_share,
    energy_in_box,
    evaluate_localization,
    format_table,
    pointing_game,
)

__all__ = [
    "METHODS", "box_area_share", "cam", "energy_in_box", "evaluate_localization", "explain", "format_table",
    "gradcam", "normalize_maps", "pointing_game", "supports_cam",
]
