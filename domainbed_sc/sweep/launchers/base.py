"""What every launcher is: a registered class with a name, a one-line description and the
``sweep launch`` flags it reads; and the launch itself (which jobs run)."""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...errors import UserError
from ...registry import Registry
from ..jobs import Job, JobEnv, Outcome
from ..status import INTERRUPTED, JobStatus, job_statuses


@dataclass(frozen=True)
class Option:
    """One ``sweep launch`` flag of a launcher; its value reaches ``Launcher.from_options`` under
    the flag's name (``--max-requeues`` -> ``max_requeues``)."""

    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    minimum: int | None = None  # a smaller value is refused (one line) when this launcher runs
    repeat: bool = False  # may be given several times; the value is the list

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def add_to(self, parser: Any) -> None:
        extra: dict[str, Any] = dict(action="append", default=[]) if self.repeat else {}
        parser.add_argument(self.flag, help=self.help, type=self.type, metavar=self.metavar, **extra)

    def value(self, a: argparse.Namespace) -> Any:
        value = getattr(a, self.dest)
        if self.minimum is not None and value is not None and value < self.minimum:
            raise UserError(f"{self.flag} must be at least {self.minimum}, got {value}")
        return value


class Launcher:
    """A way to run jobs.  Subclasses are registered with ``@LAUNCHERS.register(name)`` and set:

    * ``description``: one line, for ``sweep launch --launcher``'s help;
    * ``options``: the ``Option`` flags they read (``options_title`` heads them in the help);
    * ``packs``: whether they honour ``--pack`` (their constructor then takes ``pack``);
    * ``runs_jobs``: False for a launcher that only shows what would run (no manifest written).
    """

    name: str
    description: str = ""
    options: tuple[Option, ...] = ()
    options_title: str | None = None
    packs: bool = False
    runs_jobs: bool = True

    @classmethod
    def from_options(cls, options: dict[str, Any], pack: int, sweep: Any, output_root: Path) -> "Launcher":
        """The launcher for ``sweep launch``: its options' values by name, ``--pack``, the sweep
        and its output root.  By default the options are the constructor's arguments."""
        return cls(**options, **({"pack": pack} if cls.packs else {}))

    def describe(self) -> str:
        """How ``sweep launch`` names this launcher in its first line."""
        return self.name

    def launch(self, jobs: list[Job], env: JobEnv) -> list[Any]:
        raise NotImplementedError


LAUNCHERS: Registry[type[Launcher]] = Registry("launcher")


def summarise(outcomes: list[Outcome]) -> str:
    counts = Counter(outcomes)
    return "launch: " + ", ".join(f"{counts[o]} {o.value}" for o in Outcome)


def select(statuses: list[JobStatus], failed_only: bool = False) -> list[Job]:
    """What a launch runs: failed, interrupted and never-launched jobs (only failed and
    interrupted ones for relaunch --failed).  Done, queued and running jobs are left alone."""
    wanted = {"failed", INTERRUPTED} | (set() if failed_only else {"not launched"})
    return [s.job for s in statuses if s.state in wanted]


def launch_jobs(jobs: list[Job], launcher: Launcher, env: JobEnv, failed_only: bool = False) -> list[Any]:
    statuses = job_statuses(jobs)
    chosen = select(statuses, failed_only)
    chosen_dirs = {job.dir for job in chosen}
    skipped = Counter(s.state for s in statuses if s.job.dir not in chosen_dirs)
    if skipped:
        print("skipping: " + ", ".join(f"{n} {state}" for state, n in skipped.items()), flush=True)
    if not chosen:
        print("launch: nothing to run", flush=True)
        return []
    return launcher.launch(chosen, env)
