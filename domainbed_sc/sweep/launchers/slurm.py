"""``slurm``: one submitit job array; each task is a ``Checkpointable``, so on preemption or at
the time limit submitit requeues it and it resumes from checkpoint.pt.  The trainer appends a
record before it writes the checkpoint and drops records past the checkpoint on resume, so a
requeued job neither loses nor duplicates records."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import submitit
import torch

from ...errors import UserError
from ..jobs import Job, JobEnv, JobState, Outcome, error_line, read_state, set_job_id, write_state
from ..packing import group_packs, run_unit
from ..spec import Resources, parse_minutes
from .base import LAUNCHERS, Launcher, Option


def key_value(text: str) -> tuple[str, str | bool]:
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or KEY, got {text!r}")
    return key, value if sep else True


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


@LAUNCHERS.register("slurm")
class SlurmLauncher(Launcher):
    description = "one SLURM job array (submitit), requeued jobs resuming from their checkpoint"
    options_title = "slurm launcher (override the sweep file's resources)"
    #: each option's name is a ``Resources`` field
    options = (
        Option("--partition", "SLURM partition"),
        Option("--time", "per job: minutes or D-HH:MM:SS"),
        Option("--gpus", "GPUs per job", int),
        Option("--cpus", "CPUs per job", int),
        Option("--mem", "memory per job, e.g. 16G"),
        Option("--array-parallelism", "max array tasks running at once", int),
        Option("--max-requeues", "requeue a job that hits its time limit up to N times (default 100)",
               int, "N", minimum=0),
        Option("--sbatch", "extra sbatch option, repeatable (e.g. --sbatch qos=high)", key_value,
               "KEY=VAL", repeat=True),
    )
    packs = True

    @classmethod
    def from_options(cls, options: dict[str, Any], pack: int, sweep: Any, output_root: Path) -> "SlurmLauncher":
        """The sweep file's resources, with the flags given on top."""
        given = {k: v for k, v in options.items() if v is not None and k != "sbatch"}
        if "time" in given:
            given["time"] = parse_minutes(given["time"])
        resources = dataclasses.replace(sweep.resources, **given,
                                        sbatch={**sweep.resources.sbatch, **dict(options["sbatch"])})
        return cls(resources, output_root / ".submitit", sweep.name, pack)

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


