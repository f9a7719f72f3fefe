"""fgvc: fine-grained visual classification toolkit.

    import fgvc
    model, class_names = fgvc.load(run_dir)       # nn.Module on [0, 1] images, eval mode
    x_adv = fgvc.robust.fgsm(model, x, y, eps)    # subpackages load on first use
    maps = fgvc.explain.cam(model, x)
"""

import importlib
import os

from fgvc.openmp import choose_wait_policy  # noqa: E402

# OpenMP threads sleep at once at a barrier when other work runs beside fgvc (spinning threads of two
# jobs on the same cores burn each other's time slices: a tiny run took 64 s an epoch instead of 4 s),
# and spin first when fgvc runs alone (10-15% faster); benchmarks/results/contention.md. It must be
# decided before torch loads its OpenMP runtime, so it is decided here; a value the user set is kept.
choose_wait_policy(os.environ)

from fgvc.errors import UserError  # noqa: E402

__version__ = "0.1.0"

_SUBPACKAGES = ("clip", "data", "experiments", "explain", "export", "gan", "models", "report", "robust", "serve", "train")


def __getattr__(name):
    # importing torch-heavy subpackages (and fgvc.load's fgvc.api) only when used keeps `fgvc --help`
    # free of torch: 0.1 s instead of several seconds (tests/test_cli.py checks that torch stays out)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fgvc.{name}")
    if name == "load":
        from fgvc.api import load

        return load
    raise AttributeError(f"module 'fgvc' has no attribute {name!r}")


__all__ = ["UserError", "load", "__version__", *_SUBPACKAGES]
