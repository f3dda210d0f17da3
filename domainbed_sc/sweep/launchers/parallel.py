"""``parallel``: a pool of N spawned worker processes; each gets ``cores // N`` torch threads
and, when GPUs exist and the device is ``auto``, a GPU round-robin (several workers per GPU when
N > #GPUs).  A worker dies with the launcher (Linux), so killing a sweep leaves no orphan training
a job."""
from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from ...errors import UserError
from ..jobs import Job, JobEnv, JobState, Outcome, write_state
from ..packing import group_packs, run_unit
from ..progress import LaunchProgress
from .base import LAUNCHERS, Launcher, Option, summarise

_worker_device: str | None = None


def worker_threads(workers: int) -> int:
    """Torch threads per parallel worker: its share of the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def _die_with_launcher(launcher_pid: int) -> None:
    """Have the kernel SIGTERM this worker when the launcher exits, however it dies (SIGKILL
    included): an orphan would go on training its job, holding the job's lock, so a relaunch
    would skip that job as running. Linux only (prctl); elsewhere workers outlive a killed launcher."""
    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != launcher_pid:  # the launcher died before the prctl took effect
        os._exit(1)


def _init_worker(counter: Any, workers: int, device: str, launcher_pid: int) -> None:
    """Give this worker its share of CPU threads and, with device auto, a GPU round-robin."""
    global _worker_device
    _die_with_launcher(launcher_pid)
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


@LAUNCHERS.register("parallel")
class ParallelLauncher(Launcher):
    description = "a pool of worker processes on this machine"
    options = (Option("--workers", "worker processes (default: CPU cores)", int, minimum=1),)
    options_title = "parallel launcher"
    packs = True

    def __init__(self, workers: int | None = None, pack: int = 1):
        self.workers = workers or len(os.sched_getaffinity(0))
        self.pack = pack

    def describe(self) -> str:
        threads = worker_threads(self.workers)
        return f"parallel, {self.workers} workers x {threads} thread{'s' * (threads > 1)}"

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
                                 initargs=(counter, workers, env.device, os.getpid())) as pool:
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
