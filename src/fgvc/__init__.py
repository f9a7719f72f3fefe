"""fgvc: fine-grained visual classification toolkit.

    import fgvc
    model, class_names = fgvc.load(run_dir)       # nn.Module on [0, 1] images, eval mode
    x_adv = fgvc.robust.fgsm(model, x, y, eps)    # subpackages load on first use
    maps = fgvc.explain.cam(model, x)
"""

import importlib

from fgvc.errors import UserError

__version__ = "0.1.0"

_SUBPACKAGES = ("clip", "data", "experiments", "explain", "export", "gan", "models", "report", "robust", "serve", "train")


def __getattr__(name):
    # importing torch-heavy subpackages (and fgvc.load's fgvc.runs) only when used keeps `fgvc --help`
    # free of torch: 0.1 s instead of several seconds (tests/test_cli.py checks that torch stays out)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fgvc.{name}")
    if name == "load":
        from fgvc.runs import load

        return load
    raise AttributeError(f"module 'fgvc' has no attribute {name!r}")


__all__ = ["UserError", "load", "__version__", *_SUBPACKAGES]
