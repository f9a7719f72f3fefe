"""`fgvc --help` and `fgvc train --help` answer without importing torch (the lazy imports work)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["study", "--help"], ["weights", "--help"]])
def test_help_does_not_import_torch(argv):
    code = (f"import sys\nfrom fgvc.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'fgvc.runs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_fgvc_load_is_still_there():
    import fgvc
    from fgvc.api import load

    assert fgvc.load is load


def _busy_processes(n: int):
    """``n`` processes that keep a CPU busy each until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_at_barriers_beside_other_work_unless_the_user_says_otherwise(preset, expected):
    # decided before torch loads its OpenMP runtime (which reads it once): two jobs on the same cores
    # otherwise spin away each other's time slices (benchmarks/results/contention.md)
    import os
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import sys, os, fgvc\nprint('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    busy = _busy_processes(2)  # other work: two runnable threads beside fgvc's own
    try:
        time.sleep(0.3)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert out.split() == ["False", expected]


def test_wait_policy_choice():
    from fgvc.openmp import choose_wait_policy, others_busy

    env = {}
    assert choose_wait_policy(env, busy=lambda: False) == "default" and env == {}  # alone: OpenMP spins first
    assert choose_wait_policy(env, busy=lambda: True) == "passive" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    assert choose_wait_policy(env, busy=lambda: None) == "passive" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    for preset in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(preset)
        assert choose_wait_policy(env, busy=lambda: True) == "user" and env == preset
    # the median of the samples: one blip of another thread is not "busy", a steady one is
    reads = iter([1, 3, 1, 1, 1])
    assert others_busy(5, 0, read=lambda: next(reads)) is False
    reads = iter([2, 3, 1, 2, 3])
    assert others_busy(5, 0, read=lambda: next(reads)) is True
    assert others_busy(3, 0, read=lambda: None) is None


def test_runnable_threads_reads_loadavg(tmp_path):
    from fgvc.openmp import runnable_threads

    f = tmp_path / "loadavg"
    f.write_text("0.52 0.30 0.12 3/190 13035\n")
    assert runnable_threads(str(f)) == 3
    f.write_text("garbage")
    assert runnable_threads(str(f)) is None and runnable_threads(str(tmp_path / "missing")) is None
