"""Progress of a sweep: one bar over jobs while launching, and an ETA from measured job times.

The ETA is the work left divided by the workers: the mean time of the jobs measured so far
(worker-seconds per job: a pack of K jobs that took T seconds counts K jobs and T seconds) times
the jobs left (a running job counts its steps left), over the number of jobs running at once.
``launch`` measures the units it runs; ``sweep status`` uses the records' ``wall_time`` of the
finished jobs, so it can estimate a sweep launched elsewhere (SLURM, another shell).
"""
from __future__ import annotations

import sys

from tqdm import tqdm

from ..training.records import RESULTS, read_records
from .jobs import Job, Outcome, read_state
from .status import JobStatus

MEASURED = (Outcome.RAN, Outcome.FAILED)  # jobs that did the work (done/claimed ones took none)


def eta_seconds(seconds: float, measured: int, jobs_left: float, workers: int) -> float | None:
    """Seconds until ``jobs_left`` jobs are done, at ``seconds / measured`` worker-seconds each."""
    if measured == 0:
        return None
    return seconds / measured * jobs_left / max(1, workers)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "ETA unknown until a job finishes"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return "ETA " + (f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s")


def report(job: Job, outcome: Outcome, seconds: float) -> None:
    """One line per finished job; a failed one with its error."""
    detail = ""
    if outcome is Outcome.FAILED:
        state = read_state(job.dir)
        detail = f": {state.error}" if state else ""
    print(f"{outcome.value:>17}  {job.name}  ({seconds:.1f} s){detail}", flush=True)


class LaunchProgress:
    """The bar over a launch's jobs; ``unit_done`` prints each job's line above it."""

    def __init__(self, jobs: int, workers: int = 1):
        self.workers, self.left = workers, jobs
        self.seconds, self.measured = 0.0, 0
        self.eta = duration(None)
        # disable=None: no bar where stderr is no terminal (logs, pipes); `sweep status` has the ETA
        self.bar = tqdm(total=jobs, unit="job", desc="sweep", file=sys.stderr, mininterval=1.0,
                        bar_format="{desc}: {n_fmt}/{total_fmt} jobs |{bar}| {elapsed}{postfix}",
                        postfix=self.eta, disable=None)

    def unit_done(self, unit: list[Job], outcomes: list[Outcome], seconds: float) -> None:
        for job, outcome in zip(unit, outcomes):
            with self.bar.external_write_mode():
                report(job, outcome, seconds)
        worked = sum(o in MEASURED for o in outcomes)
        if worked:
            self.seconds += seconds
            self.measured += worked
        self.left -= len(unit)
        self.eta = duration(eta_seconds(self.seconds, self.measured, self.left, self.workers))
        self.bar.set_postfix_str(self.eta, refresh=False)
        self.bar.update(len(unit))

    def close(self) -> None:
        self.bar.close()


def last_wall_time(job: Job) -> float | None:
    wall = None
    for rec in read_records(job.dir / RESULTS):
        wall = rec.get("wall_time")
    return wall


def status_eta(statuses: list[JobStatus]) -> str:
    """The ETA line of ``sweep status``: finished jobs' wall times, the work left, the jobs
    running now (at least one)."""
    walls = [w for s in statuses if s.state == "done" for w in [last_wall_time(s.job)] if w]
    left = sum(1 - (s.step / s.total if s.step and s.total else 0) for s in statuses
               if s.state != "done")
    if left == 0:
        return "all jobs done"
    running = sum(s.state == "running" for s in statuses)
    eta = eta_seconds(sum(walls), len(walls), left, running)
    at = f"at {running} job{'s' * (running != 1)} at a time" if running else "at one job at a time"
    return f"{duration(eta)} ({left:.1f} jobs' work left, {at}; from {len(walls)} finished jobs)"
