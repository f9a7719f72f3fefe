"""Torch's CPU threads sized by what else runs on the same cores, checked while a loop runs.

GNU OpenMP's threads spin at a barrier before they sleep. A job alone on its cores gains from that,
but once another process holds one of those cores, a job whose threads wait for a descheduled peer
spins away its own time slices and collapses (3-8x; benchmarks/results/contention.md). Sleeping at
once (``OMP_WAIT_POLICY=PASSIVE``) is safe but costs a lone job 10-15%, and the policy is fixed when
torch loads. The thread count is not: ``ThreadGovernor.tick()``, called between steps, measures every
``interval`` seconds how much CPU time other processes took on this process's cores (per-CPU busy
time from /proc/stat, minus this process's and its loader workers' own from /proc/PID/stat) and sets
``torch.set_num_threads``
to the cores left free, at least 1 and at most what it started with. One thread has no barrier to
wait at, so a job beside another does not collapse, and a job alone keeps every core.

Linux only; elsewhere (no /proc) ``tick`` does nothing.
"""

from __future__ import annotations

import math
import os
import time

import torch

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_busy_ticks(cpus: set[int], path: str = "/proc/stat") -> int | None:
    """Busy clock ticks (all but idle and iowait) summed over ``cpus`` since boot; None without /proc."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in fields[:8]]
            total += sum(values) - values[3] - values[4]  # idle, iowait
    return total


def _ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5)), all threads
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def own_ticks(pid: int | None = None) -> int | None:
    """User + system clock ticks of this process (all its threads) and of its live descendants (data
    loader workers are this job's own work, not another's); None without /proc."""
    pid = os.getpid() if pid is None else pid
    total = _ticks(pid)
    if total is None:
        return None
    stack = _children(pid)
    while stack:
        child = stack.pop()
        total += _ticks(child) or 0  # a worker that just ended counts nothing
        stack += _children(child)
    return total


def free_cores(usable: int, others: float) -> int:
    """Cores of ``usable`` left to this process when other processes use ``others`` cores' worth of CPU
    time: a core counts as taken from over half of its time on (a lighter background costs a spinning
    job less than giving up a thread would); at least 1."""
    return max(1, usable - max(0, math.ceil(others - 0.5)))


class ThreadGovernor:
    """Call ``tick()`` between steps; every ``interval`` seconds it resizes torch's thread pool to the
    cores other processes leave free (``free_cores``), within 1 .. the count at construction."""

    def __init__(self, interval: float = 2.0, clock=time.monotonic, busy=cpu_busy_ticks, own=own_ticks):
        self.interval, self.clock, self.busy, self.own = interval, clock, busy, own
        self.max_threads = torch.get_num_threads()
        try:
            self.cpus = os.sched_getaffinity(0)
        except AttributeError:  # not Linux
            self.cpus = set(range(os.cpu_count() or 1))
        self.threads = self.max_threads
        self._mark = self._sample()

    def _sample(self):
        busy, own = self.busy(self.cpus), self.own()
        return None if busy is None or own is None else (self.clock(), busy, own)

    def others(self) -> float | None:
        """Cores' worth of CPU time other processes took on these cores since the last measure."""
        now = self._sample()
        if now is None or self._mark is None:
            return None
        (t0, busy0, own0), (t1, busy1, own1) = self._mark, now
        self._mark = now
        seconds = t1 - t0
        if seconds <= 0:
            return None
        return ((busy1 - busy0) - (own1 - own0)) / CLK_TCK / seconds

    def tick(self) -> int:
        """Resize the pool when ``interval`` has passed; returns the thread count in force."""
        if self._mark is None or self.clock() - self._mark[0] < self.interval or self.max_threads <= 1:
            return self.threads
        others = self.others()
        if others is not None:
            wanted = min(self.max_threads, free_cores(len(self.cpus), others))
            if wanted != self.threads:
                torch.set_num_threads(wanted)
                self.threads = wanted
        return self.threads

    def close(self) -> None:
        """Give torch back the thread count it had at construction."""
        if self.threads != self.max_threads:
            torch.set_num_threads(self.max_threads)
            self.threads = self.max_threads


__all__ = ["ThreadGovernor", "cpu_busy_ticks", "free_cores", "own_ticks"]
