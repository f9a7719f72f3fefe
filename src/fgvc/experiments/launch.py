"""``fgvc study NAME --launcher local|slurm``: one submitit job per study row.

The rows of a study are independent runs, so they can run at the same time: as processes on
this machine (``local``: submitit's LocalExecutor) or as jobs on a SLURM cluster (``slurm``:
submitit's SlurmExecutor, several rows as one job array). Both launchers submit the same
pickled call, ``run_row(...)``, which trains the row exactly as the sequential ``fgvc study``
does (``fgvc.experiments.rows.train_row``: resumed from its last finished epoch when one was
committed) and then writes the study's table if every row of the launch has finished. So:

- a re-run submits only unfinished rows (a row whose ``metrics.json`` exists is skipped), and a
  row killed mid-way resumes from its ``checkpoints/last_state.pt``;
- ``table.md`` is written when the last row finishes, also when nobody waits (``--detach``);
  waiting, fgvc writes it once more at the end and names the rows that failed and their logs.

A row with ``train.devices=N`` asks for N GPUs and, on SLURM, N tasks per node: Lightning
Fabric reads SLURM's ranks, one process per GPU (the same ``train.devices`` path as a run on
one machine). Logs and submitit's pickles go to ``<out>/<study>/.submitit/``.

In a seeded study (``--seeds``) a job is one (row, seed) cell, ``<row>/seed<S>``: the same
skip, resume and table rules hold per cell, so a killed seed is resubmitted alone.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fgvc.errors import UserError
from fgvc.experiments.analyses import run_analyses
from fgvc.experiments.rows import row_kind, train_row
from fgvc.experiments.tables import write_tables

LAUNCHERS = ("sequential", "local", "slurm")
POLL_S = 1.0


@dataclass
class LaunchOptions:
    """What each job asks for. SLURM uses them all; the local launcher uses time_min, gpus_per_node
    (GPUs given to each row's process, none on a machine without CUDA) and array_parallelism
    (processes at once when waiting)."""
    partition: str | None = None
    gpus_per_node: int | None = None  # None: each row's train.devices
    cpus_per_task: int = 8
    mem_gb: int | None = None
    time_min: int = 24 * 60
    array_parallelism: int = 32
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load ..., source venv)


def submitit():
    try:
        import submitit as sm
    except ImportError:
        from fgvc.install import install_command

        raise UserError(f"--launcher local/slurm needs submitit, which is not installed; run {install_command('cluster')}, "
                        "or run the study without --launcher") from None
    return sm


# ---------------------------------------------------------------- the job

def run_row(name: str, study: dict, row: str, cfg, folder: str, launch_rows: list[str], cell: str | None = None) -> str:
    """One row (or one (row, seed) ``cell``, its folder relative to the study's, e.g. ``row/seed1``) in its own
    process (what every launcher submits); ``launch_rows`` are the cells of the launch; ``study`` as read_study returns
    it (rows already parsed into {dotted key: value}, pickled as such, never re-parsed here). Returns the run directory."""
    folder_path = Path(folder)
    run_dir = folder_path / (cell or row)
    if not (run_dir / "metrics.json").is_file():  # finished by an earlier job of a re-submitted array
        train_row(row, study["rows"][row], cfg, run_dir, progress=False, seeds=study.get("seeds"))
    if row_kind(study["rows"][row]) == "train":  # the study's eval / attack, in the row's own job
        run_analyses(run_dir, study.get("analyses"), progress=False)
    if all((folder_path / r / "metrics.json").is_file() for r in launch_rows):
        write_tables(folder_path, study, name)  # the last row to finish writes the table (idempotent, atomic)
    return str(run_dir)


# ---------------------------------------------------------------- executors

def job_resources(cfg, options: LaunchOptions) -> dict:
    """GPUs and tasks of one row's job: one task per device (Fabric's ranks under SLURM)."""
    devices = max(1, int(cfg.train.devices))
    gpus = devices if options.gpus_per_node is None else options.gpus_per_node
    if devices > 1 and gpus < devices:
        raise UserError(f"a row trains on train.devices={devices} GPUs but --gpus-per-node is {gpus}; "
                        f"raise --gpus-per-node to {devices} or lower train.devices")
    return {"gpus_per_node": gpus, "tasks_per_node": devices if gpus else 1}


def slurm_parameters(name: str, options: LaunchOptions, resources: dict) -> dict:
    """submitit SlurmExecutor parameters for rows with ``resources`` (job_resources)."""
    params = {
        "job_name": f"fgvc-{name}", "time": int(options.time_min), "nodes": 1,
        "ntasks_per_node": resources["tasks_per_node"], "gpus_per_node": resources["gpus_per_node"],
        "cpus_per_task": options.cpus_per_task, "array_parallelism": options.array_parallelism,
        "signal_delay_s": 120, "stderr_to_stdout": True,
    }
    for key, value in (("partition", options.partition), ("account", options.account), ("qos", options.qos),
                       ("constraint", options.constraint)):
        if value:
            params[key] = value
    if options.mem_gb:
        params["mem"] = f"{options.mem_gb}GB"
    if options.setup:
        params["setup"] = list(options.setup)
    if not resources["gpus_per_node"]:
        del params["gpus_per_node"]
    return params


def make_executor(launcher: str, log_folder: Path):
    sm = submitit()
    if launcher == "local":
        return sm.LocalExecutor(folder=log_folder)
    try:
        return sm.SlurmExecutor(folder=log_folder)
    except RuntimeError:  # submitit looks for srun
        raise UserError("--launcher slurm needs SLURM (srun and sbatch) on this machine; run fgvc study on "
                        "the cluster's login node, or use --launcher local") from None


def _local_threads(parallel: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, parallel))


# ---------------------------------------------------------------- launching

def launch_study(name: str, study: dict, rows: list[str], configs: dict, folder: Path, launcher: str,
                 options: LaunchOptions | None = None, detach: bool = False, rows_of: dict | None = None) -> dict:
    """Submit the unfinished ``rows`` (one job each); wait unless ``detach``. Returns {row: job}.

    In a seeded study ``rows`` are cells (``row/seed<S>``, keys of ``configs``) and ``rows_of`` maps each
    cell to its study row; without ``rows_of`` every cell is a row."""
    options = options or LaunchOptions()
    if launcher not in ("local", "slurm"):
        raise UserError(f"--launcher must be one of {', '.join(LAUNCHERS)}, not {launcher!r}")
    for key in ("cpus_per_task", "time_min", "array_parallelism"):
        if not getattr(options, key) >= 1:
            raise UserError(f"--{key.replace('_', '-')} must be 1 or more, got {getattr(options, key)}")
    if options.gpus_per_node is not None and options.gpus_per_node < 0:
        raise UserError(f"--gpus-per-node must be 0 or more, got {options.gpus_per_node}")
    todo = [r for r in rows if not (folder / r / "metrics.json").is_file()]
    for r in rows:
        if r not in todo:
            print(f"{r}: finished earlier, skipped")
    resources = {r: job_resources(configs[r], options) for r in todo}
    folder.mkdir(parents=True, exist_ok=True)
    if not todo:
        write_tables(folder, study, name)
        return {}
    log_folder = folder / ".submitit"
    executor = make_executor(launcher, log_folder)
    rows_of = rows_of or {r: r for r in rows}
    args = {r: (name, study, rows_of[r], configs[r], str(folder), list(rows), *([r] if rows_of[r] != r else []))
            for r in todo}
    if launcher == "slurm":
        jobs = _submit_slurm(executor, name, options, resources, args)
    elif detach:  # all at once; GPUs handed out round-robin
        jobs, used = {}, 0
        for r in todo:
            visible = _pick_gpus(resources[r]["gpus_per_node"], set(), used)
            used += len(visible)
            jobs[r] = _submit_local(executor, options, visible, args[r], len(todo))
    else:
        jobs = None
    if jobs is not None:
        for r, job in jobs.items():
            print(f"{r}: submitted as job {job.job_id} ({launcher})")
    if detach:
        print(f"detached: {len(jobs)} job(s) running; logs in {log_folder}; table.md is written when the last "
              "finishes; run the same command again to resubmit rows that did not finish")
        return jobs
    if jobs is None:  # local, waiting: at most array_parallelism processes at once
        jobs = _run_local(executor, options, resources, args, todo)
    else:
        _wait(jobs)
    write_tables(folder, study, name)
    failed = {r: job for r, job in jobs.items() if not (folder / r / "metrics.json").is_file()}
    if failed:
        reasons = {r: failure(job) or ("no metrics.json", str(job.paths.stdout)) for r, job in failed.items()}
        why = "; ".join(f"{r}: {text[:200]} (log: {log})" for r, (text, log) in reasons.items())
        raise UserError(f"{len(failed)} of {len(jobs)} rows did not finish ({why}); "
                        "table.md holds the finished ones; run the same command again to resubmit only those")
    return jobs


def _submit_slurm(executor, name: str, options: LaunchOptions, resources: dict, args: dict) -> dict:
    """One job array per distinct resource shape (usually one array for the whole study)."""
    jobs = {}
    shapes: dict[tuple, list[str]] = {}
    for r, res in resources.items():
        shapes.setdefault(tuple(sorted(res.items())), []).append(r)
    for shape, group in shapes.items():
        executor.update_parameters(**slurm_parameters(name, options, dict(shape)))
        with executor.batch():
            submitted = [executor.submit(run_row, *args[r]) for r in group]
        jobs.update(zip(group, submitted))
    return jobs


def _pick_gpus(want: int, busy: set[int], start: int) -> tuple[int, ...]:
    """``want`` GPU ids of this machine: free ones first, then shared round-robin from ``start``."""
    import torch

    available = torch.cuda.device_count()
    want = min(want, available)
    free = [g for g in range(available) if g not in busy]
    if len(free) >= want:
        return tuple(free[:want])
    return tuple((start + k) % available for k in range(want))


def _submit_local(executor, options: LaunchOptions, visible: tuple[int, ...], call: tuple, parallel: int):
    gpus = len(visible)
    setup = list(options.setup)
    if "OMP_NUM_THREADS" not in os.environ:  # processes sharing the CPU: no oversubscription
        setup.append(f"export OMP_NUM_THREADS={_local_threads(parallel)}")
    # one process per row; a multi-device row spawns its DDP processes itself, as `fgvc train` does
    executor.update_parameters(timeout_min=options.time_min, gpus_per_node=gpus, visible_gpus=visible,
                               tasks_per_node=1, setup=setup)
    return executor.submit(run_row, *call)


def _run_local(executor, options: LaunchOptions, resources: dict, args: dict, todo: list[str]) -> dict:
    parallel = min(options.array_parallelism, len(todo))
    waiting, running, jobs, gpus, used = list(todo), {}, {}, {}, 0
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                r = waiting.pop(0)
                gpus[r] = _pick_gpus(resources[r]["gpus_per_node"], {g for q in running for g in gpus[q]}, used)
                used += len(gpus[r])
                jobs[r] = running[r] = _submit_local(executor, options, gpus[r], args[r], parallel)
                print(f"{r}: started as process {jobs[r].job_id}" + (f" on GPU {gpus[r]}" if gpus[r] else ""))
            for r, job in list(running.items()):
                if job.done():
                    del running[r]
                    _report(r, job)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for job in running.values():
            job.cancel()
        raise
    return jobs


def _wait(jobs: dict) -> None:
    sm = submitit()
    by_job = {id(job): r for r, job in jobs.items()}
    try:
        for job in sm.helpers.as_completed(list(jobs.values()), poll_frequency=max(POLL_S, 10.0)):
            _report(by_job[id(job)], job)
    except KeyboardInterrupt:
        print("stopped waiting; the jobs keep running (scancel them to stop); run the same command again "
              "to wait for them or to resubmit the unfinished rows")
        raise


def failure(job) -> tuple[str, str] | None:
    """``(why, log)`` of a finished job that failed, None for one that succeeded. ``why``: the row's own
    sentence (the UserError that stopped it, as ``fgvc train`` would print it), else the last line of the
    trace or of submitit's error; ``log``: the file that holds the trace, ``_log.err`` of a local process
    (its ``_log.out`` says only "Submitted job triggered an exception"), the merged ``_log.out`` on SLURM."""
    try:
        error = job.exception()
    except Exception as e:  # no result at all: the process was killed, or SLURM cancelled the job
        error = e
    if error is None:
        return None
    text = str(error)
    # the job's trace ends with the exception's own line, "fgvc.errors.UserError: <sentence>"
    sentences = re.findall(r"^fgvc\.errors\.\w+: (.+)$", text, flags=re.M)
    if sentences:
        why = sentences[-1].strip()
    else:
        lines = [ln.strip() for ln in text.splitlines() if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln.strip())]
        why = lines[-1] if lines else (text.strip().splitlines() or [error.__class__.__name__])[0].strip()
    stderr = Path(job.paths.stderr)
    log = stderr if stderr.is_file() and stderr.stat().st_size else Path(job.paths.stdout)
    return why, str(log)


def _report(row: str, job) -> None:
    failed = failure(job)
    if failed is None:
        print(f"{row}: finished")
    else:
        print(f"{row}: failed: {failed[0][:300]}; log: {failed[1]}")


def options_dict(options: LaunchOptions) -> dict:
    return asdict(options)
