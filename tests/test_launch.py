"""fgvc study --launcher local|slurm: one submitit job per row, parallel, resumable, same table."""

import csv
import json
import os
import signal
import sys
import time

import pytest
import torch

pytest.importorskip("submitit")
import submitit  # noqa: E402
from submitit.core.utils import DelayedSubmission  # noqa: E402

from fgvc import runs  # noqa: E402
from fgvc.cli import main  # noqa: E402
from fgvc.errors import UserError  # noqa: E402
from fgvc.experiments import launch  # noqa: E402
from fgvc.experiments.study import read_study, row_config, run_study  # noqa: E402

COMMON = ("model.name=test_resnet, data.image_size=32, train.epochs=1, data.num_workers=0, data.name=synthbirds, "
          "train.batch_size=16, train.accelerator=cpu, train.precision=32-true")
METRICS = ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "epochs_run")


def _study(tmp_path, rows: str, name="mini"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"title: {name}\noverrides: [{COMMON}]\ncolumns: [val_acc, test_acc]\nrows:\n{rows}")
    return path


def _history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def _table(folder):
    with open(folder / "table.csv") as f:
        return {r["row"]: r for r in csv.DictReader(f)}


@pytest.fixture
def one_thread(monkeypatch):
    """The sequential run and the launched processes both on one thread: identical float sums."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_local_launcher_runs_rows_as_parallel_processes_with_the_sequential_table(tiny_synthbirds_root, tmp_path,
                                                                                   one_thread, capsys):
    path = _study(tmp_path, "  plain: []\n  smoothed: [aug.label_smoothing=0.1]\n")
    data = [f"data.root={tiny_synthbirds_root}"]
    seq = run_study(str(path), data, out=tmp_path / "seq", progress=False)
    par = run_study(str(path), data, out=tmp_path / "par", progress=False, launcher="local")
    # the same numbers in the table (seconds and pids aside)
    a, b = _table(seq), _table(par)
    assert sorted(a) == sorted(b) == ["plain", "smoothed"]
    for row in a:
        for key in ("val_acc", "test_acc", "epochs_run"):
            assert a[row][key] == b[row][key], (row, key)
    assert (par / "table.md").read_text().count("| plain |") == 1
    # each row ran in a process of its own (submitit's logs name it), and the two overlapped in time
    logs = sorted((par / ".submitit").glob("*_0_log.out"))
    pids = {p.name.split("_")[0] for p in logs}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    # both processes were running before either finished (the launcher says so as it happens; file times
    # are no proof on 2 cores, where a tiny row can finish before the other process has imported torch)
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("plain:", "smoothed:"))]
    started = [i for i, line in enumerate(said) if "started as process" in line]
    finished = [i for i, line in enumerate(said) if line.endswith("finished")]
    assert len(started) == 2 and len(finished) == 2 and max(started) < min(finished), said


@pytest.mark.slow  # two or more fresh processes (~15-25 s on 2 cores); `make test-all` runs it
def test_local_launcher_runs_each_seed_as_a_cell_with_the_sequential_table(tiny_synthbirds_root, tmp_path,
                                                                          one_thread, capsys):
    path = _study(tmp_path, "  plain: []\n")
    data = [f"data.root={tiny_synthbirds_root}"]
    seq = run_study(str(path), data, out=tmp_path / "seq", progress=False, seeds="0,1")
    par = run_study(str(path), data, out=tmp_path / "par", progress=False, launcher="local", seeds="0,1")
    assert (par / "plain" / "seed0" / "metrics.json").is_file() and (par / "plain" / "seed1" / "metrics.json").is_file()
    with open(seq / "table_seeds.csv") as f, open(par / "table_seeds.csv") as g:
        a, b = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert len(a) == 2 and [(r["seed"], r["val_acc"], r["test_acc"]) for r in a] == \
        [(r["seed"], r["val_acc"], r["test_acc"]) for r in b]
    for key in ("val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std", "epochs_run_mean", "n"):
        assert _table(seq)["plain"][key] == _table(par)["plain"][key], key
    assert json.loads((par / "plain" / "seed1" / "metrics.json").read_text())["protocol"]["study_seeds"] == [0, 1]
    # a missing seed is resubmitted alone
    (par / "plain" / "seed1" / "metrics.json").unlink()
    capsys.readouterr()
    run_study(str(path), data, out=tmp_path / "par", progress=False, launcher="local", seeds="0,1")
    out = capsys.readouterr().out
    assert "plain/seed0: finished earlier, skipped" in out and "plain/seed1: started" in out
    assert _table(par)["plain"]["n"] == "2"


@pytest.mark.slow  # two or more fresh processes (~15-25 s on 2 cores); `make test-all` runs it
def test_a_row_killed_midway_is_resubmitted_alone_and_resumes(tiny_synthbirds_root, tmp_path, capsys):
    path = _study(tmp_path, "  short: []\n  long: [train.epochs=4, train.patience=0]\n")
    extra = [f"data.root={tiny_synthbirds_root}"]
    name, study = read_study(str(path))
    rows = list(study["rows"])
    configs = {r: row_config(study, r, extra) for r in rows}
    folder = (tmp_path / "out" / name).resolve()
    jobs = launch.launch_study(name, study, rows, configs, folder, "local", detach=True)
    state = folder / "long" / "checkpoints" / "last_state.pt"
    deadline = time.time() + 240
    while not state.is_file() and time.time() < deadline:
        time.sleep(0.02)
    assert state.is_file(), "the long row never committed an epoch"
    top = jobs["long"]._process.pid  # the job's whole process tree killed mid-way, as by a node failure
    for pid in [*_descendants(top), top]:
        os.kill(pid, signal.SIGKILL)
    jobs["long"]._process.wait()
    while not jobs["short"].done():
        time.sleep(0.2)
    assert (folder / "short" / "metrics.json").is_file() and not (folder / "long" / "metrics.json").is_file()
    assert not (folder / "table.md").exists()  # the table waits for the last row
    short_done = (folder / "short" / "metrics.json").stat().st_mtime_ns
    first_epoch = runs.load_state(state)["history"][0]  # what the killed job committed
    old_logs = set((folder / ".submitit").glob("*_log.out"))
    capsys.readouterr()

    run_study(str(path), extra, out=tmp_path / "out", progress=False, launcher="local")
    out = capsys.readouterr().out
    assert "short: finished earlier, skipped" in out and "long: started" in out and "short: started" not in out
    assert (folder / "short" / "metrics.json").stat().st_mtime_ns == short_done
    # resumed from the committed epoch, not started again: epoch 1 is the killed job's, the new job began at 2
    assert json.loads((folder / "long" / "metrics.json").read_text())["epochs_run"] == 4
    history = _history(folder / "long")
    assert len(history) == 4 and all(float(history[0][k]) == first_epoch[k] for k in ("train_loss", "seconds"))
    (new_log,) = set((folder / ".submitit").glob("*_log.out")) - old_logs
    log = new_log.read_text()
    assert "epoch   1 " not in log and "epoch   2 " in log and "epoch   4 " in log
    assert sorted(_table(folder)) == ["long", "short"]


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, depth first (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return [d for c in children for d in (*_descendants(c), c)]


@pytest.fixture
def fake_slurm(monkeypatch):
    """sbatch recorded, not run: each call returns the next job id."""
    calls = []

    def sbatch(self, *args, **kwargs):
        calls.append(list(self.command))
        return f"Submitted batch job {4242 + len(calls) - 1}\n"

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 2))
    monkeypatch.setattr(submitit.core.utils.CommandFunction, "__call__", sbatch)
    yield calls
    submitit.slurm.slurm.SlurmJob.watcher.clear()


def test_slurm_builds_the_executor_parameters_and_pickles_the_row_job(tiny_synthbirds_root, tmp_path, fake_slurm,
                                                                      one_thread):
    path = _study(tmp_path, "  a: []\n  b: [aug.label_smoothing=0.1]\n  ddp: [train.devices=2]\n")
    options = launch.LaunchOptions(partition="gpu", time_min=90, array_parallelism=2, cpus_per_task=6, mem_gb=64,
                                   account="vision", setup=["source .venv/bin/activate"])
    folder = run_study(str(path), [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "out", launcher="slurm",
                       launch_options=options, detach=True)
    logs = folder / ".submitit"
    assert [c[0] for c in fake_slurm] == ["sbatch", "sbatch"]  # one array for a+b, one job for the DDP row
    array, ddp = (logs / "4242_submission.sh").read_text(), (logs / "4243_submission.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=64GB",
                 "#SBATCH --account=vision", "#SBATCH --job-name=fgvc-mini", "source .venv/bin/activate"):
        assert line in array and line in ddp, line
    assert "#SBATCH --array=0-1%2" in array and "#SBATCH --gpus-per-node=1" in array
    assert "#SBATCH --ntasks-per-node=1" in array
    assert "--array" not in ddp and "#SBATCH --gpus-per-node=2" in ddp and "#SBATCH --ntasks-per-node=2" in ddp

    jobs = {}
    for pkl in ("4242_0", "4242_1", "4243"):
        delayed = DelayedSubmission.load(logs / f"{pkl}_submitted.pkl")
        assert delayed.function is launch.run_row
        name, study, row, cfg, out, launch_rows = delayed.args
        assert (name, out, launch_rows) == ("mini", str(folder.resolve()), ["a", "b", "ddp"])
        jobs[row] = (delayed, cfg)
    assert sorted(jobs) == ["a", "b", "ddp"]
    assert jobs["b"][1].aug.label_smoothing == 0.1 and jobs["ddp"][1].train.devices == 2
    assert jobs["a"][1].data.root == str(tiny_synthbirds_root)
    # the pickled call is the row itself: run on this machine, it trains row a into the study folder
    assert jobs["a"][0].result() == str(folder.resolve() / "a")
    assert (folder / "a" / "metrics.json").is_file() and not (folder / "table.md").exists()


def test_slurm_submits_one_array_task_per_row_and_seed(tiny_synthbirds_root, tmp_path, fake_slurm):
    path = _study(tmp_path, "  a: []\n  b: [aug.label_smoothing=0.1]\n")
    folder = run_study(str(path), [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "out", launcher="slurm",
                       detach=True, seeds="3,5")
    logs = folder / ".submitit"
    assert len(fake_slurm) == 1 and "#SBATCH --array=0-3%" in (logs / "4242_submission.sh").read_text()
    cells = {}
    for task in range(4):
        name, study, row, cfg, out, launch_cells, cell = DelayedSubmission.load(logs / f"4242_{task}_submitted.pkl").args
        assert launch_cells == ["a/seed3", "a/seed5", "b/seed3", "b/seed5"] and study["seeds"] == [3, 5]
        cells[cell] = (row, cfg.train.seed)
    assert cells == {"a/seed3": ("a", 3), "a/seed5": ("a", 5), "b/seed3": ("b", 3), "b/seed5": ("b", 5)}


def test_bad_launcher_input_is_one_sentence(tiny_synthbirds_root, tmp_path, capsys, monkeypatch):
    path = _study(tmp_path, "  a: []\n  ddp: [train.devices=2]\n")
    root = f"data.root={tiny_synthbirds_root}"
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: -1))  # no srun here
    cases = [(["--launcher", "slurm"], "needs SLURM"),
             (["--launcher", "slurm", "--gpus-per-node", "1"], "train.devices=2"),
             (["--launcher", "local", "--array-parallelism", "0"], "--array-parallelism must be 1 or more")]
    for flags, words in cases:
        assert main(["study", str(path), root, "--out", str(tmp_path / "o"), *flags]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and "Traceback" not in err, err
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UserError, match="needs submitit"):
        run_study(str(path), [root], out=tmp_path / "o", launcher="local")
    assert not (tmp_path / "o" / "mini" / "a").exists()  # nothing trained


def test_local_rows_get_free_gpus_first(monkeypatch):
    """On an 8-GPU machine a row started when one finishes gets the freed GPU, not a busy one."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert launch._pick_gpus(1, {0, 1, 2, 4}, start=5) == (3,)
    assert launch._pick_gpus(2, set(range(7)), start=9) == (1, 2)  # too few free: shared, round-robin
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert launch._pick_gpus(1, set(), start=0) == ()  # a CPU machine: no CUDA_VISIBLE_DEVICES


def test_a_failing_local_row_prints_its_sentence_and_the_log_that_holds_it(tiny_synthbirds_root, tmp_path, capsys):
    path = _study(tmp_path, "  bad: [model.name=resnet19]\n")
    assert main(["study", str(path), f"data.root={tiny_synthbirds_root}", "--out", str(tmp_path / "o"),
                 "--launcher", "local"]) == 2
    captured = capsys.readouterr()
    (said,) = [line for line in captured.out.splitlines() if line.startswith("bad: failed")]
    assert said.startswith("bad: failed: unknown model 'resnet19'") and "Traceback" not in captured.err
    log = said.split("; log: ")[-1]
    assert log.endswith("_log.err") and "unknown model 'resnet19'" in open(log).read()
    (error,) = [line for line in captured.err.splitlines() if line.startswith("fgvc: ")]
    assert "bad: unknown model 'resnet19'" in error and log in error


def test_a_failing_slurm_row_prints_its_sentence_and_its_merged_log(tiny_synthbirds_root, tmp_path, fake_slurm,
                                                                   capsys):
    import traceback

    from submitit.core import utils as sm_utils

    path = _study(tmp_path, "  bad: [model.name=resnet19]\n")
    folder = run_study(str(path), [f"data.root={tiny_synthbirds_root}"], out=tmp_path / "out", launcher="slurm",
                       detach=True)
    job = submitit.SlurmJob(folder / ".submitit", "4242")
    delayed = DelayedSubmission.load(folder / ".submitit" / "4242_submitted.pkl")
    try:  # what submitit's job process does on the cluster: the trace into the result, the log merged
        delayed.result()
    except UserError:
        trace = traceback.format_exc()
    sm_utils.cloudpickle_dump(("error", trace), job.paths.result_pickle)
    job.paths.stdout.write_text("submitit ERROR - Submitted job triggered an exception\n" + trace)
    launch._report("bad", job)
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said == (f"bad: failed: {trace.strip().splitlines()[-1].split(': ', 1)[1]}; log: {job.paths.stdout}")
    assert "unknown model 'resnet19'" in said
