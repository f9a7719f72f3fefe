"""fgvc: fine-grained visual classification toolkit.

    import fgvc
    model, class_names = fgvc.load(run_dir)   # nn.Module on [0, 1] images, eval mode
"""

from fgvc.errors import UserError
from fgvc.runs import load

__version__ = "0.1.0"

__all__ = ["UserError", "load", "__version__"]
