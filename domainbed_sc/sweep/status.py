"""The state of every job of a sweep, from its directory (and SLURM, for SLURM jobs).

States: ``not launched``, ``queued``, ``running``, ``interrupted (resumable)``, ``failed`` (with
the error's last line), ``done``.

* ``done``: the trainer wrote ``done`` (it writes it last);
* ``running``: a live process holds the job's claim (or SLURM says RUNNING);
* ``queued``: waiting in SLURM, or in the pool of a live local/parallel launcher;
* ``interrupted (resumable)``: the process running it died (killed, machine lost), or SLURM
  ended it at its time limit with no requeue left or on a node failure; the next launch resumes
  it from its checkpoint;
* ``failed``: the job raised, or SLURM ended it without ``done`` otherwise (cancelled, out of
  memory, ...); shown with the last line of its log, which says how far it got;
* ``not launched``: no launcher touched it, or its launcher died before starting it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from ..training.records import DONE, LOG, RESULTS, read_records
from ..training.run_dir import pid_alive
from .jobs import Job, JobState, is_claimed, read_state

INTERRUPTED = "interrupted (resumable)"
STATES = ("not launched", "queued", "running", INTERRUPTED, "failed", "done")
SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                "PREEMPTED"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}
SLURM_INTERRUPTED = {"TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}  # not the job's fault
SACCT_LAG_S = 120  # a fresh submission may not be in sacct yet


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str
    job_id: str | None = None
    error: str | None = None
    step: int | None = None  # last recorded step
    total: int | None = None  # steps the run will take (None until known)
    log: str | None = None  # a failed job's last log line: how far it got

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


def last_log_line(job: Job, tail: int = 4096) -> str | None:
    """The last non-empty line of the job's log (read from its last ``tail`` bytes only: a long
    run's log is large), or None without one."""
    try:
        with open(job.dir / LOG, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail))
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1].strip() if lines else None


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state per job id from one ``sacct`` call; MISSING where SLURM has no record of it.
    {} where sacct is absent or fails: then the recorded state stands."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    cmd = ["sacct", "-o", "JobID,State", "--parsable2"]
    for main_id in sorted({j.split("_")[0] for j in job_ids}):
        cmd += ["-j", main_id]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    info = SlurmInfoWatcher().read_info(out)  # expands array ranges such as 12_[3-9]
    return {j: info[j]["State"].split()[0].upper() if j in info else "MISSING" for j in job_ids}


def _pid_alive(state: JobState) -> bool:
    # on another host we cannot tell from here; trust the record
    return state.host != socket.gethostname() or pid_alive(state.pid)


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
        if sacct in SLURM_QUEUED or (sacct == "MISSING" and time.time() - recorded.time < SACCT_LAG_S):
            return "queued", None
        if sacct in SLURM_RUNNING:
            return "running", None
        if sacct == "MISSING":
            return "failed", f"SLURM has no record of job {recorded.job_id}"
        state = INTERRUPTED if sacct in SLURM_INTERRUPTED else "failed"
        return state, (f"SLURM job {recorded.job_id} ended {sacct} without finishing "
                       f"(log: {_slurm_log(job, recorded.job_id)})")
    if recorded.state == "queued":
        return ("queued", None) if _pid_alive(recorded) else ("not launched", None)
    return INTERRUPTED, "the process running it ended before the job finished"


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
        log = last_log_line(job) if state == "failed" else None
        out.append(JobStatus(job, state, rec.job_id if rec else None, error, step, total, log))
    return out


def counts(statuses: list[JobStatus]) -> dict[str, int]:
    return {state: sum(s.state == state for s in statuses) for state in STATES}


def format_status(statuses: list[JobStatus], max_error: int = 100) -> str:
    summary = ", ".join(f"{state} {n}" for state, n in counts(statuses).items() if n)
    headers = ["job", "state", "step", "job id", "error"]
    rows = [[s.job.name, s.state, s.progress, s.job_id or "", (s.error or "")[:max_error]]
            for s in statuses]
    if any(s.log for s in statuses):  # a column only when some failed job left a log
        headers.append("last log line")
        for row, s in zip(rows, statuses):
            row.append((s.log or "")[:max_error])
    table = tabulate(rows, headers=headers, disable_numparse=True)
    return f"{len(statuses)} jobs: {summary}\n{table}"
