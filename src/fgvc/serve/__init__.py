"""The web demo of a trained run (``fgvc serve RUN_DIR``): top-5, Grad-CAM overlay and an FGSM slider.

``Predictor`` (torch only) holds the model; ``create_app`` and ``serve`` need the ``serve``
extra (FastAPI, python-multipart, uvicorn) and import it on first use.
"""

from __future__ import annotations

import importlib
import importlib.util

from fgvc.errors import UserError
from fgvc.serve.predictor import Predictor, RequestError

EXTRA_MODULES = {"fastapi": "fastapi", "python_multipart": "python-multipart", "uvicorn": "uvicorn"}
LAZY = {"create_app": "fgvc.serve.app", "serve": "fgvc.serve.app", "MAX_BYTES": "fgvc.serve.app"}

__all__ = ["MAX_BYTES", "Predictor", "RequestError", "check_installed", "create_app", "serve"]


def check_installed() -> None:
    """UserError naming the install command when a package of the ``serve`` extra is missing."""
    missing = [pkg for module, pkg in EXTRA_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        from fgvc.install import install_command

        raise UserError(f"fgvc serve needs {', '.join(missing)} (the serve extra); install it with "
                        f"{install_command('serve')}")


def __getattr__(name: str):
    if name in LAZY:
        check_installed()
        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'fgvc.serve' has no attribute {name!r}")
