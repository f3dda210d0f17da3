"""``RunOptions``: where and how a run runs, none of which changes its results (so none of it is
hashed into the run's identity).

The environment options (data dir, device, train-split evaluation, evaluation batch size,
TensorBoard) are declared here once, each as an ``env_field``; everything that carries them is
derived from that declaration: the flags of ``train``, ``train-packed`` and ``sweep launch``
(``cli.add_env_arguments``), the options a command passes on (``cli.env_options``), a sweep
job's environment (``sweep.jobs.JobEnv``) and a job's command line (``cli.env_flags``).  So a
new option is one field here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class EnvField:
    """What the command line reads about one environment option of ``RunOptions``."""

    help: str
    parse: Callable[[str], Any] | None = None  # the flag's text -> value; None: an on/off flag
    choices: tuple[str, ...] | None = None
    always: bool = False  # on a job's command line even at its default, to say where it ran


def env_field(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    return field(default=default, metadata={"env": EnvField(**meta)})


@dataclass
class RunOptions:
    output_dir: Path
    # the flag's default (None) is resolved by ``datasets.sources.resolve_data_dir``
    data_dir: Path = env_field(help="data directory (default $DOMAINBED_SC_DATA or ./data)",
                               parse=str, always=True)
    device: str = env_field("auto", help="auto, cpu, cuda or cuda:N", parse=str, always=True)
    eval_train: str = env_field(  # evaluation.py
        "subsample", parse=str, choices=("subsample", "full"),
        help="splits no selection method or table reads (the training split): a fixed "
             "subsample of 5000 examples at each checkpoint (default), or in full")
    eval_batch_size: int | None = env_field(  # None: the backbone's and device's (eval_batch.py)
        None, parse=int, help="images per evaluation batch (default: the fastest measured for "
                              "the backbone and device)")
    tensorboard: bool = env_field(  # events.py
        False, help="also write TensorBoard event files of the losses and metrics at every "
                    "record, beside results.jsonl (needs the tensorboard package)")
    progress: bool = True


def env_fields() -> list[dataclasses.Field]:
    """The environment options' fields of ``RunOptions``, in declaration order."""
    return [f for f in dataclasses.fields(RunOptions) if "env" in f.metadata]
