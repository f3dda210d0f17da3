"""``domainbed-sc download``: fetch, verify and extract real data sets into the data dir."""
from __future__ import annotations

import argparse

from ..download import DEFAULT_TIMEOUT, TARGETS


def cmd_download(a: argparse.Namespace) -> None:
    from ..datasets.sources import resolve_data_dir
    from ..download import download

    download(a.targets, resolve_data_dir(a.data_dir), a.timeout, progress=not a.quiet)


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="fetch, verify and extract real data sets",
                       description="Resumable: run it again after an interruption.")
    p.add_argument("targets", nargs="+", choices=[*TARGETS, "all"], metavar="TARGET",
                   help=f"one or more of: {', '.join(TARGETS)}, all "
                        "(all = waterbirds, spawrious, mnist, fashion_mnist, cifar10)")
    p.add_argument("--data-dir", help="data directory (default $DOMAINBED_SC_DATA or ./data)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for a silent server (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_download)
