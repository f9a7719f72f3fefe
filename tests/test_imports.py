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
    from fgvc.api import load

    assert fgvc.load is load


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_at_barriers_unless_the_user_says_otherwise(preset, expected):
    # set before torch loads its OpenMP runtime (which reads it once): two jobs on the same cores
    # otherwise spin away each other's time slices (benchmarks/results/contention.md)
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import sys, os, fgvc\nprint('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", expected]
