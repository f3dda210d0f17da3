"""Sweep jobs on disk: identity, state file, and the claim that keeps a job to one process.

A job is one ``RunArgs``; its directory is ``output_root / args.dir_name()`` (a readable name plus
a hash of the scientific arguments only), so it does not depend on paths, launcher or machine.
Beside the trainer's files (results.jsonl, checkpoint.pt, done, log.txt) a job dir holds:

* ``job.json``: a ``JobState`` (launcher, SLURM job id, state, last error line), written atomically;
* ``lock``: the claim (``training.run_dir``, shared with ``train``).  The process running the job
  holds an exclusive non-blocking ``flock`` on it, so a second launcher skips the job instead of
  running it twice at the same time.  The kernel drops the lock when that process dies, so a
  killed job never stays "claimed";
* ``state.lock``: serialises read-modify-write of job.json (submitter vs. an early-starting job);
* ``error.txt``: the traceback of the last failure.

Nothing here deletes a job's outputs; a re-run resumes from checkpoint.pt (see the trainer).
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterator

from ..cache import atomic_write_bytes
from ..training.records import DONE, SWEEPS, RunArgs
from ..training.run_dir import Claim, is_claimed, try_claim  # noqa: F401 - the launchers' claim
from ..training.options import env_fields
from ..training.trainer import RunOptions, train

STATE_FILE = "job.json"
STATE_LOCK_FILE = "state.lock"
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class Job:
    args: RunArgs
    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name


def make_jobs(runs: list[RunArgs], output_root: Path) -> list[Job]:
    root = Path(output_root).resolve()
    return [Job(args, root / args.dir_name()) for args in runs]


def _options(env: "JobEnv", job: Job) -> RunOptions:
    """The job's ``RunOptions``: its dir, this environment, no progress bar."""
    return RunOptions(job.dir, progress=False, **{f.name: getattr(env, f.name) for f in env_fields()})


JobEnv = dataclasses.make_dataclass(
    "JobEnv", [(f.name, f.type, dataclasses.field(default=f.default)) for f in env_fields()],
    frozen=True, namespace={"options": _options, "__doc__": (
        "Where a job reads data, which device it uses, how it evaluates and logs: the environment "
        "options of ``RunOptions`` (training/options.py), declared there once; not part of its "
        "identity.")})
JobEnv.__module__ = __name__  # so that the parallel launcher's workers can unpickle it


def write_manifest(name: str, selection: list[str], jobs: list[Job], patience: int | None = None) -> None:
    """``<root>/.sweeps/<name>.json``: the sweep's selection methods (and early-stopping patience)
    and its job dirs, so that ``collect`` applies each sweep's own selection to its own runs,
    whatever else the root holds."""
    root = jobs[0].dir.parent
    (root / SWEEPS).mkdir(parents=True, exist_ok=True)
    blob = json.dumps({"sweep": name, "selection": selection, "patience": patience,
                       "runs": [j.name for j in jobs]},
                      indent=1).encode()
    atomic_write_bytes(root / SWEEPS / f"{name}.json", lambda f: f.write(blob))


# -- job.json --------------------------------------------------------------------------------
@dataclass
class JobState:
    state: str  # queued | running | failed | done
    launcher: str
    job_id: str | None = None  # the SLURM (submitit) job id
    error: str | None = None  # the last line of the error, for failed jobs
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    time: float = field(default_factory=time.time)


@contextmanager
def _state_lock(job_dir: Path) -> Iterator[None]:
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / STATE_LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def read_state(job_dir: Path) -> JobState | None:
    try:
        return JobState(**json.loads((job_dir / STATE_FILE).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def _write(job_dir: Path, state: JobState) -> None:
    blob = json.dumps(dataclasses.asdict(state), indent=1).encode()
    atomic_write_bytes(job_dir / STATE_FILE, lambda f: f.write(blob))


def write_state(job_dir: Path, state: JobState) -> None:
    with _state_lock(job_dir):
        _write(job_dir, state)


def set_job_id(job_dir: Path, job_id: str) -> None:
    """Record a SLURM id after submission, unless the job already started and wrote its own."""
    with _state_lock(job_dir):
        state = read_state(job_dir)
        if state is not None and state.job_id is None:
            _write(job_dir, dataclasses.replace(state, job_id=job_id))


def error_line(exc: BaseException) -> str:
    lines = [line for line in f"{type(exc).__name__}: {exc}".splitlines() if line.strip()]
    return lines[-1]


# -- running one job -------------------------------------------------------------------------
class Outcome(str, Enum):
    RAN = "ran"
    FAILED = "failed"
    CLAIMED = "running elsewhere"
    DONE = "already done"


def record_failure(job: Job, launcher: str, job_id: str | None, exc: BaseException) -> None:
    """The error's last line to job.json, the traceback (of the exception being handled) to
    error.txt."""
    atomic_write_bytes(job.dir / ERROR_FILE, lambda f: f.write(traceback.format_exc().encode()))
    write_state(job.dir, JobState("failed", launcher, job_id, error_line(exc)))


def run_job(job: Job, env: JobEnv, launcher: str, job_id: str | None = None) -> Outcome:
    """Claim the job, train it (resuming from its checkpoint) and record the outcome.

    An exception fails this job only: its last line goes to job.json, the traceback to error.txt.
    KeyboardInterrupt / SystemExit (e.g. SLURM requeue) pass through; the job resumes later.
    """
    claim = try_claim(job.dir)
    if claim is None:
        return Outcome.CLAIMED
    try:
        if (job.dir / DONE).exists():
            return Outcome.DONE
        write_state(job.dir, JobState("running", launcher, job_id))
        try:
            train(job.args, env.options(job))
        except Exception as exc:
            record_failure(job, launcher, job_id, exc)
            return Outcome.FAILED
        write_state(job.dir, JobState("done", launcher, job_id))
        return Outcome.RAN
    finally:
        claim.release()
