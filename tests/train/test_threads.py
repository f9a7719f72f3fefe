"""The CPU thread governor: the pool shrinks to the cores other processes leave free and grows back when
they go, measured from /proc; and the training loop consults it every step unless train.threads=fixed."""

import subprocess
import sys
import time

import pytest
import torch

from fgvc.train.threads import ThreadGovernor, cpu_busy_ticks, free_cores, own_ticks


@pytest.mark.parametrize("usable, others, expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.5, 2), (2, 0.6, 1),
                                                      (2, 1.0, 1), (2, 1.9, 1), (4, 1.0, 3), (4, 2.6, 1),
                                                      (8, -0.1, 8)])
def test_free_cores(usable, others, expected):
    assert free_cores(usable, others) == expected


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_governor_follows_what_others_use(two_threads, monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    clock, ticks = Clock(), {"busy": 0, "own": 0}
    g = ThreadGovernor(interval=2.0, clock=clock, busy=lambda cpus: ticks["busy"], own=lambda: ticks["own"])
    hz = 100  # clock ticks per second (CLK_TCK)
    monkeypatch.setattr("fgvc.train.threads.CLK_TCK", hz)

    def run(seconds, own_cores, other_cores):
        clock.t += seconds
        ticks["own"] += int(own_cores * seconds * hz)
        ticks["busy"] += int((own_cores + other_cores) * seconds * hz)
        return g.tick()

    assert run(1.0, 2.0, 1.0) == 2 and torch.get_num_threads() == 2  # before the interval: no measure yet
    assert run(1.5, 1.0, 1.0) == 1 and torch.get_num_threads() == 1  # another job holds a core
    assert run(2.0, 1.0, 0.9) == 1  # it still does
    assert run(2.0, 1.0, 0.05) == 2 and torch.get_num_threads() == 2  # gone: every core again
    assert run(2.0, 2.0, 0.3) == 2  # a light background is not a job
    run(2.0, 1.0, 1.0)
    g.close()
    assert torch.get_num_threads() == 2


def test_cpu_busy_ticks_reads_the_given_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 10 100 5 0 0 0 0 0\n"
                    "cpu0 1 2 3 1000 7 4 5 6 0 0\n"
                    "cpu1 10 20 30 1000 70 40 50 60 0 0\n"
                    "intr 123\n")
    assert cpu_busy_ticks({0}, str(stat)) == 1 + 2 + 3 + 4 + 5 + 6
    assert cpu_busy_ticks({0, 1}, str(stat)) == 21 + 210
    assert cpu_busy_ticks({0}, str(tmp_path / "missing")) is None


def test_own_ticks_count_child_processes():
    import os

    def ticks(pid):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    # the child spends 0.4 s of CPU (however busy the machine is), then waits alive
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nwhile time.process_time() < 0.4: pass\ntime.sleep(60)"])
    try:
        deadline = time.time() + 60
        while ticks(child.pid) < 30 and time.time() < deadline:
            time.sleep(0.05)
        child_ticks = ticks(child.pid)
        assert child_ticks >= 30
        alone = ticks(os.getpid())  # both counts only grow: own_ticks must hold at least their sum
        assert own_ticks() >= alone + child_ticks
    finally:
        child.kill()
        child.wait()


def test_training_loop_consults_the_governor_each_step(tiny_synthbirds_root, tmp_path, monkeypatch):
    from fgvc import config as config_mod
    from fgvc.train import loop

    made = []

    class Spy:
        def __init__(self):
            self.ticks, self.closed = 0, False
            made.append(self)

        def tick(self):
            self.ticks += 1
            return 1

        def close(self):
            self.closed = True

    monkeypatch.setattr(loop, "ThreadGovernor", Spy)
    cfg = config_mod.load(None, ["model.name=test_resnet", "data.name=synthbirds", f"data.root={tiny_synthbirds_root}",
                                 "data.image_size=32", "train.epochs=2", "train.batch_size=8", "data.num_workers=0",
                                 f"out={tmp_path}/runs"])
    loop.train(cfg, progress=False)
    from fgvc.data import build_dataset

    batches = -(-len(build_dataset("synthbirds", tiny_synthbirds_root, "train")) // 8)  # per epoch, at most
    assert len(made) == 1 and made[0].closed and 2 * (batches - 1) <= made[0].ticks <= 2 * batches
    cfg.train.threads = "fixed"
    cfg.out = str(tmp_path / "fixed")
    loop.train(cfg, progress=False)
    assert len(made) == 1
