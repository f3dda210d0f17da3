"""``domainbed-sc sweep launch|relaunch|status SWEEP.yaml``: run a sweep file's jobs, or show them.

``launch`` runs every job that is neither done nor queued/running somewhere (finished jobs are
skipped, interrupted ones resume from their checkpoint); ``relaunch --failed`` only the failed
ones; ``status`` counts jobs per state and lists them.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..cli import add_env_arguments, eval_options


def key_value(text: str) -> tuple[str, str | bool]:
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or KEY, got {text!r}")
    return key, value if sep else True


def default_launcher() -> tuple[str, str]:
    """The launcher when none is given, and why: on a CPU-only machine the parallel launcher with
    one single-threaded worker per core (2 x 1 thread beat 1 x 2 threads on the dev VM, issue
    15); with a GPU the local one, which keeps the GPU to one run at a time."""
    import torch

    if torch.cuda.is_available():
        return "local", "the default with a GPU"
    return "parallel", "the default without a GPU: one single-threaded worker per core"


def launcher_text(launcher) -> str:
    from ..sweep.launchers import ParallelLauncher, worker_threads

    if not isinstance(launcher, ParallelLauncher):
        return launcher.name
    threads = worker_threads(launcher.workers)
    return f"parallel, {launcher.workers} workers x {threads} thread{'s' * (threads > 1)}"


def make_launcher(a: argparse.Namespace, sweep, output_root: Path):
    from ..errors import UserError
    from ..sweep import launchers
    from ..sweep.spec import parse_minutes

    name = "dry" if a.dry_run else a.launcher
    if a.pack < 1:
        raise UserError(f"--pack must be at least 1, got {a.pack}")
    if name == "local":
        return launchers.LocalLauncher(a.pack)
    if name == "parallel":
        if a.workers is not None and a.workers < 1:
            raise UserError(f"--workers must be at least 1, got {a.workers}")
        return launchers.ParallelLauncher(a.workers, a.pack)
    if name == "dry":
        return launchers.DryLauncher()
    if a.max_requeues is not None and a.max_requeues < 0:
        raise UserError(f"--max-requeues must be at least 0, got {a.max_requeues}")
    flags = {"partition": a.partition, "gpus": a.gpus, "cpus": a.cpus, "mem": a.mem,
             "array_parallelism": a.array_parallelism, "max_requeues": a.max_requeues,
             "time": None if a.time is None else parse_minutes(a.time)}
    resources = dataclasses.replace(sweep.resources, **{k: v for k, v in flags.items() if v is not None},
                                    sbatch={**sweep.resources.sbatch, **dict(a.sbatch)})
    return launchers.SlurmLauncher(resources, output_root / ".submitit", sweep.name, a.pack)


def cmd_launch(a: argparse.Namespace, failed_only: bool = False) -> None:
    from ..datasets.sources import resolve_data_dir
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
    if not (a.dry_run or a.launcher == "dry"):
        write_manifest(sweep.name, sweep.selection, jobs, sweep.patience)
    print(f"sweep {sweep.name}: {len(jobs)} jobs under {root}; launcher {launcher_text(launcher)} "
          f"({why})", flush=True)
    env = JobEnv(resolve_data_dir(a.data_dir), a.device, **eval_options(a))
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
    p.add_argument("--launcher", choices=("local", "parallel", "slurm", "dry"),
                   help="default: parallel (one 1-thread worker per core) without a GPU, else local")
    p.add_argument("--dry-run", action="store_true", help="print what would run (= --launcher dry)")
    p.add_argument("--workers", type=int, help="parallel: worker processes (default: CPU cores)")
    p.add_argument("--pack", type=int, default=1, metavar="K",
                   help="train up to K jobs that differ only in their seeds as one vmapped process "
                        "(local, parallel, slurm; jobs that cannot be packed run alone)")
    slurm = p.add_argument_group("slurm (override the sweep file's resources)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", help="per job: minutes or D-HH:MM:SS")
    slurm.add_argument("--gpus", type=int, help="GPUs per job")
    slurm.add_argument("--cpus", type=int, help="CPUs per job")
    slurm.add_argument("--mem", help="memory per job, e.g. 16G")
    slurm.add_argument("--array-parallelism", type=int, help="max array tasks running at once")
    slurm.add_argument("--max-requeues", type=int, metavar="N",
                       help="requeue a job that hits its time limit up to N times (default 100)")
    slurm.add_argument("--sbatch", type=key_value, action="append", default=[], metavar="KEY=VAL",
                       help="extra sbatch option, repeatable (e.g. --sbatch qos=high)")


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
