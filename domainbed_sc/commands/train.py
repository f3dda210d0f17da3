"""``domainbed-sc train``: one run, resumed from its checkpoint if its output dir has one."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_env_arguments, add_run_arguments, env_options, run_args


def print_run_files(out: Path) -> None:
    """Where a run's log and records go, before it starts: to follow it, or to look after a
    failure."""
    from ..training.records import LOG, RESULTS

    print(f"log: {out / LOG}\nrecords: {out / RESULTS}", flush=True)


def cmd_train(a: argparse.Namespace) -> None:
    from ..training.records import RESULTS, read_records
    from ..training.trainer import RunOptions, check_run, train

    args = run_args(a)
    check_run(args)  # before its directory name is made from the arguments
    out = Path(a.output_dir) if a.output_dir else Path(a.output_root) / args.dir_name()
    opts = RunOptions(out, progress=not a.quiet, **env_options(a))
    print_run_files(out)
    out = train(args, opts)
    last = list(read_records(out / RESULTS))[-1]
    print(f"output: {out}")
    print(f"step {last['step']}  epoch {last['epoch']:.2f}  wall {last['wall_time']:.1f}s  "
          f"device {last['device']}")
    for split, m in last["metrics"].items():
        wga = f"  WGA {m['wga']:.4f}" if "wga" in m else ""
        print(f"  {split:12s} acc {m['acc']:.4f}{wga}  (n={m['n']}{', subsample' * bool(m.get('subsample'))})")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one run (resumes if its output dir has a checkpoint)")
    add_run_arguments(p)
    add_env_arguments(p)
    p.add_argument("--output-dir", help="exact output dir (default: OUTPUT_ROOT/<name>-<hash>)")
    p.add_argument("--output-root", default="runs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
