"""Launchers: run a sweep's jobs one after another, in a process pool, on SLURM, or not at all.

Each launcher is one class registered in ``LAUNCHERS`` (``base.Launcher``), in its own module
here; the modules are discovered, and ``sweep launch``'s ``--launcher`` choices, its help and the
launcher's own flags are generated from the registry (``commands/sweep.py``), so a new launcher
touches one file.

Every launcher ends in ``jobs.run_job``, which claims the job (so two launchers never run the same
job at once), skips it if done, and otherwise trains it, resuming from its checkpoint.

``sweep launch`` without ``--launcher`` uses ``parallel`` on a machine without a GPU and ``local``
with one (``commands/sweep.py``).  Local and parallel show one progress bar over the jobs with an
ETA (``progress.py``).

With ``pack`` > 1 (``sweep launch --pack K``) the launchers that declare ``packs`` (local,
parallel, slurm) run jobs that differ only in their seeds K at a time as one packed process
(``packing.run_pack``, one array task per pack); the others as before.
"""
from __future__ import annotations

from ...registry import import_all
from .base import LAUNCHERS, Launcher, Option, launch_jobs, select

import_all(__name__, __path__, skip=("base",))

# the classes by name too, for code and tests that construct one directly
from .dry import DryLauncher, train_command  # noqa: E402
from .local import LocalLauncher  # noqa: E402
from .parallel import ParallelLauncher, worker_threads  # noqa: E402
from .slurm import SlurmLauncher  # noqa: E402

__all__ = ["LAUNCHERS", "DryLauncher", "Launcher", "LocalLauncher", "Option", "ParallelLauncher",
           "SlurmLauncher", "launch_jobs", "select", "train_command", "worker_threads"]
