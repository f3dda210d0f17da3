"""The command line: ``domainbed-sc <command>`` (also ``python -m domainbed_sc``).

Each command lives in its own module, which adds its parser here through ``add_parser``.
A ``UserError`` anywhere becomes one line on stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from .errors import UserError

#: modules that define ``add_parser(subparsers)``; each sets ``func`` on its parser
COMMAND_MODULES = ["domainbed_sc.cli"]


def json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({exc.msg})") from None


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument("--algorithm", default="ERM")
    p.add_argument("--dataset-args", type=json_arg, default={}, help='JSON, e.g. \'{"n_backgrounds": 8}\'')
    p.add_argument("--hparams", type=json_arg, default={}, help='JSON overrides, e.g. \'{"lr": 0.005}\'')
    p.add_argument("--hparams-seed", type=int, default=0)
    p.add_argument("--trial-seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int)
    length.add_argument("--epochs", type=float)
    p.add_argument("--checkpoint-freq", type=int, help="steps between evaluations (default: an epoch)")


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default $DOMAINBED_SC_DATA or ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def cmd_train(a: argparse.Namespace) -> None:
    from .datasets.sources import resolve_data_dir
    from .training.records import RunArgs, read_records, RESULTS
    from .training.trainer import RunOptions, train

    args = RunArgs(dataset=a.dataset, algorithm=a.algorithm, dataset_args=a.dataset_args,
                   hparams=a.hparams, hparams_seed=a.hparams_seed, trial_seed=a.trial_seed,
                   data_seed=a.data_seed, steps=a.steps, epochs=a.epochs,
                   checkpoint_freq=a.checkpoint_freq)
    out = Path(a.output_dir) if a.output_dir else Path(a.output_root) / args.dir_name()
    opts = RunOptions(out, resolve_data_dir(a.data_dir), a.device, progress=not a.quiet)
    out = train(args, opts)
    last = list(read_records(out / RESULTS))[-1]
    print(f"output: {out}")
    print(f"step {last['step']}  epoch {last['epoch']:.2f}  wall {last['wall_time']:.1f}s  "
          f"device {last['device']}")
    for split, m in last["metrics"].items():
        wga = f"  WGA {m['wga']:.4f}" if "wga" in m else ""
        print(f"  {split:12s} acc {m['acc']:.4f}{wga}  (n={m['n']})")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one run (resumes if its output dir has a checkpoint)")
    add_run_arguments(p)
    add_env_arguments(p)
    p.add_argument("--output-dir", help="exact output dir (default: OUTPUT_ROOT/<name>-<hash>)")
    p.add_argument("--output-root", default="runs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="domainbed-sc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"domainbed-sc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("domainbed-sc: interrupted", file=sys.stderr)
        return 130
    return 0
