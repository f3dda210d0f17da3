"""``sweep launch --pack K``: compatible jobs run K at a time as one packed training process.

Jobs that differ only in their trial and data seeds (``training.packed.pack_key``) are grouped in
launch order into packs of up to K; a job that cannot be packed is a pack of one and runs through
``run_job`` as before.  A pack claims its jobs one by one like ``run_job`` does, so a job that is
done or claimed elsewhere simply drops out of it.
"""
from __future__ import annotations

from pathlib import Path

from ..training.packed import pack_key
from ..training.records import DONE
from .jobs import Claim, Job, JobEnv, JobState, Outcome, record_failure, run_job, try_claim, write_state


def group_packs(jobs: list[Job], size: int) -> list[list[Job]]:
    """The jobs in packs of up to ``size`` sharing a pack key, each placed where its first job
    was; jobs that cannot be packed alone."""
    units: list[list[Job]] = []
    open_packs: dict[str, list[Job]] = {}
    for job in jobs:
        key = pack_key(job.args) if size > 1 else None
        if key is None:
            units.append([job])
            continue
        pack = open_packs.setdefault(key, [])
        if not pack:
            units.append(pack)
        pack.append(job)
        if len(pack) == size:
            del open_packs[key]
    return units


def run_pack(jobs: list[Job], env: JobEnv, launcher: str, job_id: str | None = None) -> list[Outcome]:
    """``run_job`` for a pack: the jobs this process claims and that are not done train together;
    an exception fails each of them (the pack shares one process)."""
    from ..training.packed import train_packed

    claims: list[Claim] = []
    outcomes: dict[Path, Outcome] = {}  # by job dir: RunArgs (hence Job) is unhashable
    try:
        for job in jobs:
            claim = try_claim(job.dir)
            if claim is None:
                outcomes[job.dir] = Outcome.CLAIMED
                continue
            claims.append(claim)
            if (job.dir / DONE).exists():
                outcomes[job.dir] = Outcome.DONE
        todo = [job for job in jobs if job.dir not in outcomes]
        for job in todo:
            write_state(job.dir, JobState("running", launcher, job_id))
        try:
            train_packed([(job.args, env.options(job)) for job in todo])
        except Exception as exc:
            for job in todo:
                record_failure(job, launcher, job_id, exc)
                outcomes[job.dir] = Outcome.FAILED
        else:
            for job in todo:
                write_state(job.dir, JobState("done", launcher, job_id))
                outcomes[job.dir] = Outcome.RAN
    finally:
        for claim in claims:
            claim.release()
    return [outcomes[job.dir] for job in jobs]


def run_unit(unit: list[Job], env: JobEnv, launcher: str, job_id: str | None = None) -> list[Outcome]:
    """One outcome per job of a unit from ``group_packs``."""
    if len(unit) == 1:
        return [run_job(unit[0], env, launcher, job_id)]
    return run_pack(unit, env, launcher, job_id)
