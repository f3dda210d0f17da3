"""``domainbed-sc download``: put the real data sets into the data dir (datasets/files.py).

Targets are generated from the dataset registry: every file set a dataset declares (``files``)
by its name, and every such dataset by its own name.  ``--for SWEEP`` adds what a sweep file's
runs read; it is setup's data step (scripts/setup.sh).  The names are checked when the command
runs, not by argparse, so that ``domainbed-sc --help`` need not import the datasets.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..download import DEFAULT_TIMEOUT, MIRROR_ENV


def cmd_download(a: argparse.Namespace) -> None:
    from ..datasets import files
    from ..datasets.sources import resolve_data_dir
    from ..errors import UserError

    if a.list:
        for name, sets in files.targets().items():
            print(f"{name}: {'; '.join(f.layout for f in sets)}")
        return
    if not a.targets and not a.for_sweep:
        raise UserError("name a target or --for SWEEP_FILE (`domainbed-sc download --list` "
                        "lists the targets)")
    wanted = files.resolve(a.targets) + [f for p in a.for_sweep for f in files.for_sweep(p)]
    local = a.local_copy or os.environ.get(files.SHARED_ENV)
    how = files.How(a.timeout, not a.quiet, a.mirror or os.environ.get(MIRROR_ENV) or None,
                    Path(local).expanduser().resolve() if local else None)
    files.ensure(wanted, resolve_data_dir(a.data_dir), how)


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="fetch, verify and extract real data sets",
                       description="Resumable: run it again after an interruption. Files already "
                                   "in the data dir are kept; a local copy is used before the "
                                   "network.")
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="data sets or file sets (e.g. mnist_cifar, mnist, cifar10, waterbirds, "
                        "spawrious_o2o_easy), or all; --list prints every one")
    p.add_argument("--for", dest="for_sweep", action="append", default=[], metavar="SWEEP_FILE",
                   help="also what the runs of this sweep file read (repeatable)")
    p.add_argument("--list", action="store_true", help="print the targets and their layouts")
    p.add_argument("--data-dir", help="data directory (default $DOMAINBED_SC_DATA or ./data)")
    p.add_argument("--local-copy", metavar="DIR",
                   help="a folder in the data-dir layout to copy from before downloading "
                        "(default $DOMAINBED_SC_SHARED)")
    p.add_argument("--mirror", metavar="URL",
                   help=f"fetch every archive from URL/<its path in the data dir> (default "
                        f"${MIRROR_ENV}; a copy of a data dir serves); the published checksums "
                        "still apply")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for a silent server (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_download)
