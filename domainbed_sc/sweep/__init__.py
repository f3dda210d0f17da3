"""Sweeps: a YAML file → jobs (``spec``), their state on disk (``jobs``, ``status``), and the
launchers that run them (``launchers``).  ``domainbed-sc sweep`` is the command line."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .jobs import Job, JobEnv, make_jobs
from .spec import Sweep, load_sweep, validate

#: a sweep with more jobs than this is refused unless confirmed (``--yes``): likely a typo in a grid
MAX_JOBS = 10_000


def sweep_jobs(path: str | Path, output_root: str | Path | None = None,
               check: bool = True, yes: bool = False) -> tuple[Sweep, list[Job]]:
    """The sweep in ``path`` and its jobs under ``output_root`` (default runs/<file stem>).
    The jobs are counted before they are expanded, so a runaway grid is refused at once."""
    sweep = load_sweep(path)
    count = sweep.count()
    if count > MAX_JOBS and not yes:
        raise UserError(f"{path}: the sweep expands to {count:,} jobs (more than {MAX_JOBS:,}); "
                        f"pass --yes if that is intended")
    runs = sweep.runs()
    if check:
        validate(runs)
    root = Path(output_root) if output_root is not None else Path("runs") / sweep.name
    return sweep, make_jobs(runs, root)


__all__ = ["MAX_JOBS", "Job", "JobEnv", "Sweep", "load_sweep", "make_jobs", "sweep_jobs", "validate"]
