"""The state of every job of a sweep, from its directory (and SLURM, for SLURM jobs).

States: ``not launched``, ``queued``, ``running``, ``failed`` (with the error's last line), ``done``.

* ``done``: the trainer wrote ``done`` (it writes it last);
* ``running``: a live process holds the job's claim (or SLURM says RUNNING);
* ``queued``: waiting in SLURM, or in the pool of a live local/parallel launcher;
* ``failed``: the job raised, SLURM ended it without ``done`` (cancelled, timed out, out of
  memory, ...), or the process running it died (``interrupted``);
* ``not launched``: no launcher touched it, or its launcher died before starting it.
"""
from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from ..training.records import DONE, RESULTS, read_records
from .jobs import Job, JobState, is_claimed, read_state

STATES = ("not launched", "queued", "running", "failed", "done")
SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                "PREEMPTED", "UNKNOWN"}  # UNKNOWN: sacct has not seen a fresh submission yet
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str
    job_id: str | None = None
    error: str | None = None
    step: int | None = None  # last recorded step
    total: int | None = None  # steps the run will take (None until known)

    @property
    def progress(self) -> str:
        if self.step is None:
            return ""
        return f"{self.step}/{self.total if self.total is not None else '?'}"


def progress(job: Job) -> tuple[int | None, int | None]:
    """(last step, total steps) from results.jsonl; total from epochs needs one record."""
    last = None
    for last in read_records(job.dir / RESULTS):
        pass
    if last is None:
        return None, job.args.steps
    if job.args.steps is not None:
        return last["step"], job.args.steps
    epochs = job.args.epochs if job.args.epochs is not None else 1.0
    return last["step"], max(1, round(epochs * last["step"] / last["epoch"])) if last["epoch"] else None


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state per job id, from one ``sacct`` call ({} where sacct is not available)."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    watcher = SlurmInfoWatcher(delay_s=0)  # parses sacct's output, array ranges included
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()
    return {j: watcher.get_state(j, mode="cache").split()[0].upper() for j in job_ids}


def _pid_alive(state: JobState) -> bool:
    if state.host != socket.gethostname():
        return True  # cannot tell from here; trust the record
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slurm_log(job: Job, job_id: str) -> Path:
    from submitit.core.utils import JobPaths

    return JobPaths(job.dir.parent / ".submitit", job_id).stderr


def job_state(job: Job, recorded: JobState | None, slurm: dict[str, str]) -> tuple[str, str | None]:
    """(state, error line) of one job."""
    if (job.dir / DONE).exists():
        return "done", None
    if is_claimed(job.dir):
        return "running", None
    if recorded is None:
        return "not launched", None
    if recorded.state == "failed":
        return "failed", recorded.error
    if recorded.launcher == "slurm":
        sacct = slurm.get(recorded.job_id or "")
        if sacct is None:  # no id yet, or no sacct here: trust the record
            return recorded.state, None
        if sacct in SLURM_QUEUED:
            return "queued", None
        if sacct in SLURM_RUNNING:
            return "running", None
        return "failed", (f"SLURM job {recorded.job_id} ended {sacct} without finishing "
                          f"(log: {_slurm_log(job, recorded.job_id)})")
    if recorded.state == "queued":
        return ("queued", None) if _pid_alive(recorded) else ("not launched", None)
    return "failed", "interrupted: the process running it ended before the job finished"


def job_statuses(jobs: list[Job]) -> list[JobStatus]:
    recorded = {job.dir: read_state(job.dir) for job in jobs}
    slurm = slurm_states(sorted({s.job_id for s in recorded.values()
                                 if s and s.launcher == "slurm" and s.job_id
                                 and s.state in ("queued", "running")}))
    out = []
    for job in jobs:
        rec = recorded[job.dir]
        state, error = job_state(job, rec, slurm)
        step, total = progress(job)
        out.append(JobStatus(job, state, rec.job_id if rec else None, error, step, total))
    return out


def counts(statuses: list[JobStatus]) -> dict[str, int]:
    return {state: sum(s.state == state for s in statuses) for state in STATES}


def format_status(statuses: list[JobStatus], max_error: int = 100) -> str:
    summary = ", ".join(f"{state} {n}" for state, n in counts(statuses).items() if n)
    rows = [[s.job.name, s.state, s.progress, s.job_id or "", (s.error or "")[:max_error]]
            for s in statuses]
    table = tabulate(rows, headers=["job", "state", "step", "job id", "error"], disable_numparse=True)
    return f"{len(statuses)} jobs: {summary}\n{table}"
