"""``local``: the jobs in this process, one after another; a failing job is recorded and the
next one runs."""
from __future__ import annotations

import time

from ..jobs import Job, JobEnv, JobState, Outcome, write_state
from ..packing import group_packs, run_unit
from ..progress import LaunchProgress
from .base import LAUNCHERS, Launcher, summarise


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    description = "in this process, one job after another"
    packs = True

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
