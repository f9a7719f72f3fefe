"""A small web demo of a trained run: top-5 classes and a Grad-CAM overlay (``fgvc serve RUN_DIR``)."""

from fgvc.serve.app import MAX_BYTES, Predictor, make_server, serve

__all__ = ["MAX_BYTES", "Predictor", "make_server", "serve"]
