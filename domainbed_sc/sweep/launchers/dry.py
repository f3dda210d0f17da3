"""``dry``: print the jobs (as ``domainbed-sc train`` commands) and run nothing."""
from __future__ import annotations

import shlex
import sys

from ...cli import env_flags, run_flags
from ..jobs import Job, JobEnv
from .base import LAUNCHERS, Launcher


def train_command(job: Job, env: JobEnv) -> str:
    """The ``domainbed-sc train`` command line that runs this job by hand."""
    return shlex.join(["domainbed-sc", "train", *run_flags(job.args), "--output-dir", str(job.dir),
                       *env_flags(env)])


@LAUNCHERS.register("dry")
class DryLauncher(Launcher):
    description = "print each job's `domainbed-sc train` command and run nothing (= --dry-run)"
    runs_jobs = False

    def launch(self, jobs: list[Job], env: JobEnv) -> list[Job]:
        for job in jobs:
            print(train_command(job, env))
        print(f"dry run: {len(jobs)} jobs would run", file=sys.stderr)
        return jobs
