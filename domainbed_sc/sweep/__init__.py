"""Sweeps: a YAML file → jobs (``spec``), their state on disk (``jobs``, ``status``), and the
launchers that run them (``launchers``).  ``domainbed-sc sweep`` is the command line."""
from __future__ import annotations

from pathlib import Path

from .jobs import Job, JobEnv, make_jobs
from .spec import Sweep, load_sweep, validate


def sweep_jobs(path: str | Path, output_root: str | Path | None = None,
               check: bool = True) -> tuple[Sweep, list[Job]]:
    """The sweep in ``path`` and its jobs under ``output_root`` (default runs/<file stem>)."""
    sweep = load_sweep(path)
    runs = sweep.runs()
    if check:
        validate(runs)
    root = Path(output_root) if output_root is not None else Path("runs") / sweep.name
    return sweep, make_jobs(runs, root)


__all__ = ["Job", "JobEnv", "Sweep", "load_sweep", "make_jobs", "sweep_jobs", "validate"]
