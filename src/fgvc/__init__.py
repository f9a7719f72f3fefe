"""fgvc: fine-grained visual classification toolkit.

    import fgvc
    model, class_names = fgvc.load(run_dir)       # nn.Module on [0, 1] images, eval mode
    x_adv = fgvc.robust.fgsm(model, x, y, eps)    # subpackages load on first use
    maps = fgvc.explain.cam(model, x)
"""

import importlib

from fgvc.errors import UserError
from fgvc.runs import load

__version__ = "0.1.0"

_SUBPACKAGES = ("clip", "data", "experiments", "explain", "export", "gan", "models", "report", "robust", "serve", "train")


def __getattr__(name):
    # importing torch-heavy subpackages only when used keeps `fgvc --help` fast
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fgvc.{name}")
    raise AttributeError(f"module 'fgvc' has no attribute {name!r}")


__all__ = ["UserError", "load", "__version__", *_SUBPACKAGES]
