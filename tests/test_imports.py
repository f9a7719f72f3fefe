"""`fgvc --help` and `fgvc train --help` answer without importing torch (the lazy imports work)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["weights", "--help"]])
def test_help_does_not_import_torch(argv):
    code = (f"import sys\nfrom fgvc.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'fgvc.runs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_fgvc_load_is_still_there():
    import fgvc
    from fgvc.runs import load

    assert fgvc.load is load
