"""``domainbed-sc sweep launch|relaunch|status SWEEP.yaml``: run a sweep file's jobs, or show them.

``launch`` runs every job that is neither done nor queued/running somewhere (finished jobs are
skipped, interrupted ones resume from their checkpoint); ``relaunch --failed`` only the failed
ones; ``status`` counts jobs per state and lists them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_env_arguments, env_options


def default_launcher() -> tuple[str, str]:
    """The launcher when none is given, and why: on a CPU-only machine the parallel launcher with
    one single-threaded worker per core (2 x 1 thread beat 1 x 2 threads on the dev VM, issue
    15); with a GPU the local one, which keeps the GPU to one run at a time."""
    import torch

    if torch.cuda.is_available():
        return "local", "the default with a GPU"
    return "parallel", "the default without a GPU: one single-threaded worker per core"


def make_launcher(a: argparse.Namespace, sweep, output_root: Path):
    """The registered launcher named by --launcher (or --dry-run), from its own options."""
    from ..errors import UserError
    from ..sweep.launchers import LAUNCHERS

    if a.pack < 1:
        raise UserError(f"--pack must be at least 1, got {a.pack}")
    cls = LAUNCHERS.get("dry" if a.dry_run else a.launcher)
    options = {option.dest: option.value(a) for option in cls.options}
    return cls.from_options(options, a.pack, sweep, output_root)


def cmd_launch(a: argparse.Namespace, failed_only: bool = False) -> None:
    from ..errors import UserError
    from ..sweep import JobEnv, sweep_jobs
    from ..sweep.jobs import Outcome, write_manifest
    from ..sweep.launchers import launch_jobs
    from ..training.trainer import resolve_device

    resolve_device(a.device)  # a bad device fails here, not once per job
    sweep, jobs = sweep_jobs(a.sweep, a.output_root, yes=a.yes)
    root = jobs[0].dir.parent
    why = "given"
    if a.launcher is None and not a.dry_run:
        a.launcher, why = default_launcher()
    launcher = make_launcher(a, sweep, root)
    if launcher.runs_jobs:
        write_manifest(sweep.name, sweep.selection, jobs, sweep.patience)
    print(f"sweep {sweep.name}: {len(jobs)} jobs under {root}; launcher {launcher.describe()} "
          f"({why})", flush=True)
    env = JobEnv(**env_options(a))
    result = launch_jobs(jobs, launcher, env, failed_only)
    failed = sum(r is Outcome.FAILED for r in result)
    if failed:
        raise UserError(f"{failed} job(s) failed; `domainbed-sc sweep status {a.sweep}` shows "
                        f"their errors, `sweep relaunch --failed` runs them again")


def cmd_relaunch(a: argparse.Namespace) -> None:
    cmd_launch(a, failed_only=True)


def cmd_status(a: argparse.Namespace) -> None:
    from ..sweep import sweep_jobs
    from ..sweep.progress import status_eta
    from ..sweep.status import format_status, job_statuses

    _, jobs = sweep_jobs(a.sweep, a.output_root, check=False, yes=a.yes)
    statuses = job_statuses(jobs)
    print(format_status(statuses))
    print(status_eta(statuses))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep YAML file (see sweeps/)")
    p.add_argument("--output-root", help="where job dirs go (default runs/<sweep file name>)")
    p.add_argument("--yes", action="store_true",
                   help="accept a sweep of more than 10,000 jobs (refused otherwise)")


def _launch_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    add_env_arguments(p)
    from ..sweep.launchers import LAUNCHERS

    kinds = [LAUNCHERS.get(name) for name in LAUNCHERS.names()]
    p.add_argument("--launcher", choices=LAUNCHERS.names(),
                   help="; ".join(f"{k.name}: {k.description}" for k in kinds) +
                   " (default: parallel, one 1-thread worker per core, without a GPU, else local)")
    p.add_argument("--dry-run", action="store_true", help="print what would run (= --launcher dry)")
    p.add_argument("--pack", type=int, default=1, metavar="K",
                   help="train up to K jobs that differ only in their seeds as one vmapped process "
                        f"({', '.join(k.name for k in kinds if k.packs)}; jobs that cannot be "
                        "packed run alone)")
    for kind in kinds:
        if kind.options:
            group = p.add_argument_group(kind.options_title or f"{kind.name} launcher")
            for option in kind.options:
                option.add_to(group)


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="launch a sweep file's jobs, relaunch failed ones, show status")
    actions = p.add_subparsers(dest="action", required=True)
    launch = actions.add_parser("launch", help="run every job not done, queued or running")
    _launch_arguments(launch)
    launch.set_defaults(func=cmd_launch)
    relaunch = actions.add_parser("relaunch", help="run the failed jobs again")
    _launch_arguments(relaunch)
    relaunch.add_argument("--failed", action="store_true", required=True, help="only failed jobs")
    relaunch.set_defaults(func=cmd_relaunch)
    status = actions.add_parser("status", help="jobs per state, and a table of jobs")
    _common(status)
    status.set_defaults(func=cmd_status)
