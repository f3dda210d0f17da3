"""The command line: ``domainbed-sc <command>`` (also ``python -m domainbed_sc``).

Each command is one module in ``domainbed_sc/commands`` with ``add_parser(subparsers)``, which
sets ``func`` on its parser; the modules are discovered, so a new command touches one file.
A ``UserError`` anywhere becomes one line on stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from typing import Any

from .errors import UserError

def json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({exc.msg})") from None


def add_run_arguments(p: argparse.ArgumentParser, many_seeds: bool = False) -> None:
    """The RunArgs flags; ``many_seeds``: trial and data seeds take lists (one run per seed)."""
    p.add_argument("--dataset", required=True)
    p.add_argument("--algorithm", default="ERM")
    p.add_argument("--dataset-args", type=json_arg, default={}, help='JSON, e.g. \'{"n_backgrounds": 8}\'')
    p.add_argument("--hparams", type=json_arg, default={}, help='JSON overrides, e.g. \'{"lr": 0.005}\'')
    p.add_argument("--hparams-seed", type=int, default=0)
    seeds = dict(nargs="+", default=[0]) if many_seeds else dict(default=0)
    p.add_argument("--trial-seed", type=int, **seeds)
    p.add_argument("--data-seed", type=int, **seeds)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int)
    length.add_argument("--epochs", type=float)
    p.add_argument("--checkpoint-freq", type=int, help="steps between evaluations (default: an epoch)")


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default $DOMAINBED_SC_DATA or ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--eval-train", choices=("subsample", "full"), default="subsample",
                   help="splits no selection method or table reads (the training split): a fixed "
                        "subsample of 5000 examples at each checkpoint (default), or in full")
    p.add_argument("--eval-batch-size", type=int,
                   help="images per evaluation batch (default: the fastest measured for the "
                        "backbone and device)")


def eval_options(a: argparse.Namespace) -> dict[str, Any]:
    """The RunOptions fields ``add_env_arguments`` sets besides the data dir and device."""
    return {"eval_train": a.eval_train, "eval_batch_size": a.eval_batch_size}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="domainbed-sc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for reports that name their command
    try:
        args.func(args)
    except UserError as exc:
        print(f"domainbed-sc: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `... | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("domainbed-sc: interrupted", file=sys.stderr)
        return 130
    return 0
