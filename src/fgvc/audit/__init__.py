"""Data audits (`fgvc data audit`): near-duplicates between train and test and against other folders
(``fgvc.audit.duplicates``, perceptual hashes from imagehash), and likely mislabelled training images
(``fgvc.audit.labelnoise``, out-of-fold linear probes ranked by cleanlab). See docs/evaluation.md,
"Data audits"."""

from __future__ import annotations

import importlib

from fgvc.errors import UserError


def require(module: str):
    """Import an optional dependency of the audits, or UserError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        from fgvc.install import install_command

        raise UserError(f"fgvc data audit needs the {module.split('.')[0]} package; install it with "
                        f"{install_command('audit')}") from None


__all__ = ["require"]
