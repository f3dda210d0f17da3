"""Launchers: run a sweep's jobs one after another, in a process pool, on SLURM, or not at all.

Every launcher ends in ``jobs.run_job``, which claims the job (so two launchers never run the same
job at once), skips it if done, and otherwise trains it, resuming from its checkpoint.

* ``local``: in this process, one after another; a failing job is recorded and the next one runs.
* ``parallel``: a pool of N spawned worker processes; each gets ``cores // N`` torch threads and,
  when GPUs exist and the device is ``auto``, a GPU round-robin (several workers per GPU when
  N > #GPUs).
* ``slurm``: one submitit job array; each task is a ``Checkpointable``, so on preemption or at
  the time limit submitit requeues it and it resumes from checkpoint.pt.  The trainer appends a
  record before it writes the checkpoint and drops records past the checkpoint on resume, so a
  requeued job neither loses nor duplicates records.
* ``dry``: print the jobs (as ``domainbed-sc train`` commands) and run nothing.

``sweep launch`` without ``--launcher`` uses ``parallel`` on a machine without a GPU and ``local``
with one (``commands/sweep.py``).  Local and parallel show one progress bar over the jobs with an
ETA (``progress.py``).

With ``pack`` > 1 (``sweep launch --pack K``) local, parallel and slurm run jobs that differ only
in their seeds K at a time as one packed process (``packing.run_pack``, one array task per pack);
the others as before.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import submitit
import torch

from ..errors import UserError
from .jobs import Job, JobEnv, JobState, Outcome, error_line, read_state, set_job_id, write_state
from .packing import group_packs, run_unit
from .progress import LaunchProgress
from .spec import Resources
from .status import INTERRUPTED, JobStatus, job_statuses


def report(job: Job, outcome: Outcome, seconds: float) -> None:
    detail = ""
    if outcome is Outcome.FAILED:
        state = read_state(job.dir)
        detail = f": {state.error}" if state else ""
    print(f"{outcome.value:>17}  {job.name}  ({seconds:.1f} s){detail}", flush=True)


def summarise(outcomes: list[Outcome]) -> str:
    counts = Counter(outcomes)
    return "launch: " + ", ".join(f"{counts[o]} {o.value}" for o in Outcome)


class LocalLauncher:
    name = "local"

    def __init__(self, pack: int = 1):
        self.pack = pack

    def launch(self, jobs: list[Job], env: JobEnv) -> list[Outcome]:
        for job in jobs:  # queued under this process: shown as such while it lives
            write_state(job.dir, JobState("queued", self.name))
        outcomes = []
        progress = LaunchProgress(len(jobs))
        for unit in group_packs(jobs, self.pack):
            t0 = time.time()
            outcomes += run_unit(unit, env, self.name)
            progress.unit_done(unit, outcomes[-len(unit):], time.time() - t0)
        progress.close()
        print(summarise(outcomes), flush=True)
        return outcomes


# -- parallel --------------------------------------------------------------------------------
_worker_device: str | None = None


def worker_threads(workers: int) -> int:
    """Torch threads per parallel worker: its share of the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def _init_worker(counter: Any, workers: int, device: str) -> None:
    """Give this worker its share of CPU threads and, with device auto, a GPU round-robin."""
    global _worker_device
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    torch.set_num_threads(worker_threads(workers))
    gpus = torch.cuda.device_count() if device == "auto" else 0
    _worker_device = f"cuda:{index % gpus}" if gpus else device


def _run_in_worker(unit: list[Job], env: JobEnv) -> tuple[list[Outcome], float]:
    t0 = time.time()
    outcomes = run_unit(unit, dataclasses.replace(env, device=_worker_device or env.device), "parallel")
    return outcomes, time.time() - t0


class ParallelLauncher:
    name = "parallel"

    def __init__(self, workers: int | None = None, pack: int = 1):
        self.workers = workers or len(os.sched_getaffinity(0))
        self.pack = pack

    def launch(self, jobs: list[Job], env: JobEnv) -> list[Outcome]:
        for job in jobs:
            write_state(job.dir, JobState("queued", self.name))
        # spawn, not fork: forking a process whose torch thread pools are live can deadlock
        ctx = multiprocessing.get_context("spawn")
        counter = ctx.Value("i", 0)
        outcomes = []
        units = group_packs(jobs, self.pack)
        workers = min(self.workers, max(1, len(units)))
        lost = 0  # jobs of units that a dead worker took down with the pool
        progress = LaunchProgress(len(jobs), workers)
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(counter, workers, env.device)) as pool:
            futures = {pool.submit(_run_in_worker, unit, env): unit for unit in units}
            for future in as_completed(futures):
                try:
                    unit_outcomes, seconds = future.result()
                except BrokenProcessPool:
                    lost += len(futures[future])
                    continue
                outcomes += unit_outcomes
                progress.unit_done(futures[future], unit_outcomes, seconds)
        progress.close()
        print(summarise(outcomes), flush=True)
        if lost:
            raise UserError(f"parallel launcher: a worker process died (killed, out of memory?); "
                            f"{lost} job(s) did not finish; launch again to resume them")
        return outcomes


# -- slurm -----------------------------------------------------------------------------------
class JobFailed(RuntimeError):
    """Raised in a SLURM task whose job failed, so that SLURM marks the task FAILED too."""


class SlurmTask(submitit.helpers.Checkpointable):
    """The callable each array task runs.  ``checkpoint`` (submitit calls it on USR2, i.e. on
    preemption or near the time limit) resubmits the same task: the trainer's own checkpoint
    (written after every evaluation) is what the requeued task resumes from."""

    def __init__(self, env: JobEnv):
        self.env = env

    def __call__(self, unit: list[Job]) -> str:
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            torch.set_num_threads(int(cpus))
        outcomes = run_unit(unit, self.env, "slurm", submitit.JobEnvironment().job_id)
        for job, outcome in zip(unit, outcomes):
            if outcome is Outcome.FAILED:
                state = read_state(job.dir)
                raise JobFailed(state.error if state else "job failed")
        return ", ".join(outcome.value for outcome in outcomes)

    def checkpoint(self, unit: list[Job]) -> submitit.helpers.DelayedSubmission:
        for job in unit:
            write_state(job.dir, JobState("queued", "slurm", submitit.JobEnvironment().job_id))
        return super().checkpoint(unit)


class SlurmLauncher:
    name = "slurm"

    def __init__(self, resources: Resources, folder: Path, job_name: str = "domainbed_sc",
                 pack: int = 1):
        self.resources, self.folder, self.job_name = resources, Path(folder), job_name
        self.pack = pack

    def executor(self) -> submitit.AutoExecutor:
        if shutil.which("sbatch") is None:
            raise UserError("slurm launcher: sbatch not found (is SLURM installed, and SLURM_CONF set?)")
        r = self.resources
        # submitit gives up after max_num_timeout time limits (3 by default); preemptions never
        executor = submitit.AutoExecutor(folder=self.folder, cluster="slurm",
                                         slurm_max_num_timeout=r.max_requeues)
        params: dict[str, Any] = dict(
            name=self.job_name, timeout_min=r.time, cpus_per_task=r.cpus,
            slurm_array_parallelism=r.array_parallelism, slurm_signal_delay_s=r.signal_delay_s,
            slurm_additional_parameters=dict(r.sbatch))
        if r.gpus:
            params["gpus_per_node"] = r.gpus
        if r.partition:
            params["slurm_partition"] = r.partition
        if r.mem:
            params["slurm_mem"] = r.mem
        executor.update_parameters(**params)
        return executor

    def launch(self, jobs: list[Job], env: JobEnv) -> list[submitit.Job]:
        executor = self.executor()
        for job in jobs:  # before submitting: a task may start (and write its state) at once
            write_state(job.dir, JobState("queued", self.name))
        units = group_packs(jobs, self.pack)
        try:
            submitted = executor.map_array(SlurmTask(env), units)
        except Exception as exc:
            for job in jobs:
                write_state(job.dir, JobState("failed", self.name, error=f"submission failed: {error_line(exc)}"))
            raise UserError(f"slurm launcher: submission failed: {error_line(exc)}") from None
        for unit, sjob in zip(units, submitted):
            for job in unit:
                set_job_id(job.dir, sjob.job_id)
        first, last = submitted[0].job_id, submitted[-1].job_id
        print(f"launch: submitted {len(jobs)} jobs to SLURM ({first} .. {last}); "
              f"logs in {self.folder}", flush=True)
        return submitted


# -- dry -------------------------------------------------------------------------------------
def train_command(job: Job, env: JobEnv) -> str:
    """The ``domainbed-sc train`` command line that runs this job by hand."""
    from ..cli import run_flags

    cmd = ["domainbed-sc", "train", *run_flags(job.args)]
    cmd += ["--output-dir", str(job.dir), "--data-dir", str(env.data_dir), "--device", env.device]
    if env.eval_train != "subsample":
        cmd += ["--eval-train", env.eval_train]
    if env.eval_batch_size is not None:
        cmd += ["--eval-batch-size", str(env.eval_batch_size)]
    return shlex.join(cmd)


class DryLauncher:
    name = "dry"

    def launch(self, jobs: list[Job], env: JobEnv) -> list[Job]:
        for job in jobs:
            print(train_command(job, env))
        print(f"dry run: {len(jobs)} jobs would run", file=sys.stderr)
        return jobs


LAUNCHERS = ("local", "parallel", "slurm", "dry")


def select(statuses: list[JobStatus], failed_only: bool = False) -> list[Job]:
    """What a launch runs: failed, interrupted and never-launched jobs (only failed and
    interrupted ones for relaunch --failed).  Done, queued and running jobs are left alone."""
    wanted = {"failed", INTERRUPTED} | (set() if failed_only else {"not launched"})
    return [s.job for s in statuses if s.state in wanted]


def launch_jobs(jobs: list[Job], launcher: Any, env: JobEnv, failed_only: bool = False) -> list[Any]:
    statuses = job_statuses(jobs)
    chosen = select(statuses, failed_only)
    chosen_dirs = {job.dir for job in chosen}
    skipped = Counter(s.state for s in statuses if s.job.dir not in chosen_dirs)
    if skipped:
        print("skipping: " + ", ".join(f"{n} {state}" for state, n in skipped.items()), flush=True)
    if not chosen:
        print("launch: nothing to run", flush=True)
        return []
    return launcher.launch(chosen, env)
