"""``dry``: print the jobs (as ``domainbed-sc train`` commands) and run nothing."""
from __future__ import annotations

import shlex
import sys

from ...cli import run_flags
from ..jobs import Job, JobEnv
from .base import LAUNCHERS, Launcher


def train_command(job: Job, env: JobEnv) -> str:
    """The ``domainbed-sc train`` command line that runs this job by hand."""
    cmd = ["domainbed-sc", "train", *run_flags(job.args)]
    cmd += ["--output-dir", str(job.dir), "--data-dir", str(env.data_dir), "--device", env.device]
    if env.eval_train != "subsample":
        cmd += ["--eval-train", env.eval_train]
    if env.eval_batch_size is not None:
        cmd += ["--eval-batch-size", str(env.eval_batch_size)]
    return shlex.join(cmd)


@LAUNCHERS.register("dry")
class DryLauncher(Launcher):
    description = "print each job's `domainbed-sc train` command and run nothing (= --dry-run)"
    runs_jobs = False

    def launch(self, jobs: list[Job], env: JobEnv) -> list[Job]:
        for job in jobs:
            print(train_command(job, env))
        print(f"dry run: {len(jobs)} jobs would run", file=sys.stderr)
        return jobs
