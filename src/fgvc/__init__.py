"""fgvc: fine-grained visual classification toolkit.

    import fgvc
    model, class_names = fgvc.load(run_dir)       # nn.Module on [0, 1] images, eval mode
    x_adv = fgvc.robust.fgsm(model, x, y, eps)    # subpackages load on first use
    maps = fgvc.explain.cam(model, x)
"""

import importlib
import os

# OpenMP threads that wait at a barrier sleep at once instead of spinning: with two jobs on the same
# cores (a study beside a demo, two seeds) spinning threads burn the time slices their peers need, and
# a tiny run measured 64 s an epoch instead of 4 s (benchmarks/results/contention.md). It must be set
# before torch loads its OpenMP runtime, so it lives here; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
