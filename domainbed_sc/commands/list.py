"""``domainbed-sc list KIND``: what is registered, read from the registries themselves.

Each kind is one entry of ``KINDS``: the registry and the words for the labels an entry needs or
provides.  A new algorithm, dataset or backbone shows up here without touching this file.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from typing import Any, Callable, NamedTuple

from tabulate import tabulate

from ..errors import UserError


class Kind(NamedTuple):
    registry: Callable[[], Any]  # imported lazily: ``--help`` should not import torch models
    labels_header: str
    labels: Callable[[Any], str]
    text: Callable[[Any], str] | None = None  # the description; default ``describe``


def _algorithms():
    from ..algorithms import ALGORITHMS
    return ALGORITHMS


def _datasets():
    from ..datasets import DATASETS
    return DATASETS


def _backbones():
    from ..networks import FEATURIZERS
    return FEATURIZERS


def _launchers():
    from ..sweep.launchers import LAUNCHERS
    return LAUNCHERS


def _metrics():
    from ..metrics import METRICS
    return METRICS


def _selections():
    from ..collect.methods import METHODS
    return METHODS


def _samplers():
    from ..training.samplers import SAMPLERS
    return SAMPLERS


def _labels(names) -> str:
    return ", ".join(sorted(names)) or "-"


KINDS: dict[str, Kind] = {
    "algorithms": Kind(_algorithms, "requires", lambda cls: _labels(cls.requires)),
    "datasets": Kind(_datasets, "provides", lambda cls: _labels(cls.provides)),
    "backbones": Kind(_backbones, "", lambda fn: ""),
    "launchers": Kind(_launchers, "options", lambda cls: " ".join(o.flag for o in cls.options) or "-"),
    "metrics": Kind(_metrics, "needs", lambda m: "g" if m.needs_groups else "-", lambda m: m.describe()),
    "samplers": Kind(_samplers, "needs", lambda cls: cls.needs or "-"),
    "selections": Kind(_selections, "needs", lambda m: m.needs, lambda m: m.label),
}


def describe(obj: Any) -> str:
    """The entry's one-line description: its ``description``, else the first line of its own
    docstring, else of its module's (an algorithm module's docstring says what it computes)."""
    text = getattr(obj, "description", None)
    if not text and isinstance(obj, type):  # its own docstring, not a base class's
        text = obj.__dict__.get("__doc__") or sys.modules[obj.__module__].__doc__
    text = (text or obj.__doc__ or "").strip()
    paragraph = " ".join(text.split("\n\n")[0].split())
    # the first sentence: a full stop before a capital ("i.i.d. draws", "et al. 2020" go on)
    return re.split(r"\.\s+(?=[A-Z])", paragraph)[0].rstrip(".") + "." if paragraph else ""


def list_table(kind: str) -> str:
    spec = KINDS[kind]
    registry = spec.registry()
    text = spec.text or describe
    rows = [[name, spec.labels(registry.get(name)), text(registry.get(name))]
            for name in registry.names()]
    headers = ["name", spec.labels_header, "description"]
    if not spec.labels_header:
        rows, headers = [[r[0], r[2]] for r in rows], [headers[0], headers[2]]
    return tabulate(rows, headers, tablefmt="github")


def hparams_table(name: str) -> str:
    """An algorithm's space: default (small images / large images), random-search range, doc."""
    cls = _algorithms().get(name)
    rows = []
    for hp_name, hp in sorted(cls.space().items()):
        large = hp.resolve(small_images=False)
        default = repr(hp.default) + (f" / {large[0]!r}" if hp.large is not None else "")
        search = str(hp.sample) if hp.sample is not None else "fixed"
        if hp.large is not None and large[1] is not hp.sample:
            search += f" / {large[1] if large[1] is not None else 'fixed'}"
        rows.append([hp_name, default, search, hp.spec().expected(), hp.doc])
    return tabulate(rows, ["hparam", "default (small / large images)", "search", "accepts", "meaning"],
                    tablefmt="github")


def dataset_args_table(name: str) -> str:
    cls = _datasets().get(name)
    rows = [[f.name, repr(f.default), f.metadata["spec"].expected() if "spec" in f.metadata else ""]
            for f in dataclasses.fields(cls.Args)]
    return tabulate(rows, ["dataset argument", "default", "accepts"], tablefmt="github")


def cmd_list(a: argparse.Namespace) -> None:
    if a.hparams and a.kind not in ("algorithms", "datasets"):
        raise UserError("--hparams takes an algorithm (list algorithms) or a dataset (list datasets)")
    if a.hparams:
        print(hparams_table(a.hparams) if a.kind == "algorithms" else dataset_args_table(a.hparams))
    else:
        print(list_table(a.kind))


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="what is registered: " + ", ".join(KINDS),
                       description="Every registered name with its one-line description.")
    p.add_argument("kind", choices=list(KINDS))
    p.add_argument("--hparams", metavar="NAME",
                   help="an algorithm's hyperparameter space (defaults and search ranges), "
                        "or a dataset's arguments")
    p.set_defaults(func=cmd_list)
