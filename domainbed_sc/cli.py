"""The command line: ``domainbed-sc <command>`` (also ``python -m domainbed_sc``).

Each command is one module in ``domainbed_sc/commands`` with ``add_parser(subparsers)``, which
sets ``func`` on its parser; the modules are discovered, so a new command touches one file.
A ``UserError`` anywhere becomes one line on stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
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


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def run_fields() -> list[tuple[str, Any, Any]]:
    """(name, default or MISSING, RunField) of every ``RunArgs`` field, in declaration order."""
    from .training.records import RunArgs

    out = []
    for f in dataclasses.fields(RunArgs):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append((f.name, default, f.metadata["run"]))
    return out


def add_run_arguments(p: argparse.ArgumentParser, many_seeds: bool = False) -> None:
    """A flag per ``RunArgs`` field, from its ``RunField``; ``many_seeds``: the seed fields take
    lists (one run per seed)."""
    groups: dict[str, Any] = {}
    for name, default, meta in run_fields():
        kw: dict[str, Any] = {"help": meta.help.replace("%", "%%")}
        if meta.kind == "flag":
            kw["action"] = "store_true"
        else:
            kw["type"] = json_arg if meta.kind == "json" else meta.parse
            if default is dataclasses.MISSING:
                kw["required"] = True
            else:
                kw["default"] = [default] if many_seeds and meta.seeds else default
            if many_seeds and meta.seeds:
                kw["nargs"] = "+"
        if meta.exclusive is not None and meta.exclusive not in groups:
            groups[meta.exclusive] = p.add_mutually_exclusive_group()
        groups.get(meta.exclusive, p).add_argument(flag(name), **kw)


def run_args(a: argparse.Namespace, **given: Any):
    """The ``RunArgs`` that ``add_run_arguments``' flags parsed to; ``given`` replaces fields."""
    from .training.records import RunArgs

    return RunArgs(**{name: given.get(name, getattr(a, name)) for name, _, _ in run_fields()})


def run_flags(args) -> list[str]:
    """The flags that ``add_run_arguments`` parses back to ``args`` (a ``RunArgs``); empty and
    unset fields are left out."""
    out: list[str] = []
    for name, _, meta in run_fields():
        value = getattr(args, name)
        if value is None or value is False or (meta.kind == "json" and not value):
            continue
        out.append(flag(name))
        if meta.kind != "flag":
            out.append(json.dumps(value) if meta.kind == "json" else str(value))
    return out


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    """A flag per environment option of ``RunOptions``, from its ``EnvField``."""
    from .training.options import env_fields

    for f in env_fields():
        meta = f.metadata["env"]
        kw: dict[str, Any] = {"help": meta.help.replace("%", "%%")}
        if meta.parse is None:
            kw["action"] = "store_true"
        else:
            kw.update(type=meta.parse, choices=meta.choices,
                      default=None if f.default is dataclasses.MISSING else f.default)
        p.add_argument(flag(f.name), **kw)


def env_options(a: argparse.Namespace) -> dict[str, Any]:
    """The ``RunOptions`` (and ``JobEnv``) fields that ``add_env_arguments``' flags parsed to,
    the data dir resolved."""
    from .datasets.sources import resolve_data_dir
    from .training.options import env_fields

    return {f.name: resolve_data_dir(a.data_dir) if f.name == "data_dir" else getattr(a, f.name)
            for f in env_fields()}


def env_flags(env) -> list[str]:
    """The flags that ``add_env_arguments`` parses back to ``env`` (a ``JobEnv``); options at
    their defaults are left out, unless ``always``."""
    from .training.options import env_fields

    out: list[str] = []
    for f in env_fields():
        meta, value = f.metadata["env"], getattr(env, f.name)
        if value is None or value is False or (value == f.default and not meta.always):
            continue
        out += [flag(f.name)] if meta.parse is None else [flag(f.name), str(value)]
    return out


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
