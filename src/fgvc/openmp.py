"""OpenMP's wait policy, chosen by what else runs, before torch loads its OpenMP runtime.

GNU OpenMP's threads spin for a while at a barrier before they sleep. Alone on its cores a job gains
from that; two jobs on the same cores each spin away the time slices the other's threads need, and
both collapse (3-8x below a fair share; ``OMP_WAIT_POLICY=PASSIVE``, sleeping at once, keeps them
fair but costs a lone job 10-15%; benchmarks/results/contention.md). So fgvc looks when it starts:
if other threads are runnable on this machine beyond its own, it sets ``OMP_WAIT_POLICY=PASSIVE``;
otherwise it leaves OpenMP's default. A job started beside a running one therefore sleeps at its
barriers. The running one, if it chose to spin, would collapse beside it (``mixed`` rows of
benchmarks/contention.py): fgvc's training loop guards it by shrinking its thread pool to the cores
left free (``fgvc.train.threads``). ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set by the user is kept.

Standard library only: ``fgvc/__init__.py`` calls ``choose_wait_policy`` before anything imports torch.
"""

from __future__ import annotations

import os
import time

SAMPLES = 5  # /proc/loadavg reads, SAMPLE_GAP_S apart: a few milliseconds in all
SAMPLE_GAP_S = 0.004
USER_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def runnable_threads(path: str = "/proc/loadavg") -> int | None:
    """Threads runnable on the machine right now (the 4th field's numerator, ``R/T``), this one
    included; None where the file is missing or unreadable (not Linux)."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def others_busy(samples: int = SAMPLES, gap_s: float = SAMPLE_GAP_S, read=runnable_threads) -> bool | None:
    """Whether other threads keep the CPUs busy: the median of ``samples`` reads of ``read()`` is above 1
    (this thread). None when it cannot be told."""
    counts = []
    for k in range(samples):
        if k:
            time.sleep(gap_s)
        n = read()
        if n is None:
            return None
        counts.append(n)
    return sorted(counts)[len(counts) // 2] > 1


def choose_wait_policy(environ=os.environ, busy=others_busy) -> str:
    """Set ``environ["OMP_WAIT_POLICY"] = "PASSIVE"`` when ``busy()`` says other work runs (or cannot tell);
    leave OpenMP's default otherwise, and keep whatever the user set. Returns what was decided: "user",
    "passive" or "default"."""
    if any(v in environ for v in USER_VARS):
        return "user"
    if busy() is False:
        return "default"
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "passive"


__all__ = ["choose_wait_policy", "others_busy", "runnable_threads"]
