"""``domainbed-sc train-packed``: several seeds of one configuration trained as one pack.

The runs differ only in their trial and data seeds; each gets the output dir ``domainbed-sc
train`` would give it, with the same files, so either command can finish what the other began.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_env_arguments, add_run_arguments, env_options, run_args
from ..errors import UserError
from .train import print_run_files


def pack_members(a: argparse.Namespace):
    from ..training.trainer import RunOptions

    trials, datas = a.trial_seed, a.data_seed
    if len(datas) == 1:
        datas = datas * len(trials)
    elif len(trials) == 1:
        trials = trials * len(datas)
    if len(trials) != len(datas):
        raise UserError(f"give as many --data-seed values as --trial-seed values, or one "
                        f"(got {len(trials)} and {len(datas)})")
    env = env_options(a)
    members = []
    for trial, data in zip(trials, datas):
        args = run_args(a, trial_seed=trial, data_seed=data)
        opts = RunOptions(Path(a.output_root) / args.dir_name(), progress=not a.quiet, **env)
        members.append((args, opts))
    return members


def cmd_train_packed(a: argparse.Namespace) -> None:
    from ..training.packed import train_packed
    from ..training.records import RESULTS, read_records

    members = pack_members(a)
    for _, opts in members:
        print_run_files(opts.output_dir)
    for out in train_packed(members):
        last = list(read_records(out / RESULTS))[-1]
        accs = "  ".join(f"{split} {m['acc']:.4f}" for split, m in last["metrics"].items())
        print(f"{out}  step {last['step']}  wall {last['wall_time']:.1f}s  {accs}")


def add_parser(sub) -> None:
    p = sub.add_parser("train-packed", help="train several seeds of one configuration at once "
                       "(vmapped; resumes from the runs' checkpoints)")
    add_run_arguments(p, many_seeds=True)
    add_env_arguments(p)
    p.add_argument("--output-root", default="runs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_packed)
