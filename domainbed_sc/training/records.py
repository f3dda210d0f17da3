"""Run arguments and result records, and the results.jsonl file they live in.

``results.jsonl`` holds one JSON object per checkpoint.  Appends are a single ``write`` of a
whole line followed by fsync; readers skip a truncated last line, so a killed run never leaves a
record that breaks the collector.  Records are strict JSON: an undefined metric (NaN, e.g. on an
empty group) is written as null; older files with NaN literals are still read.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..cache import atomic_write_bytes, disk_full_is_user_error, stable_hash
from ..errors import UserError

RESULTS = "results.jsonl"
CHECKPOINT = "checkpoint.pt"
DONE = "done"
LOG = "log.txt"  # the trainer's log: a line per evaluation
#: ``<output root>/.sweeps/<sweep>.json``: a sweep's ``selection`` and the job dirs it launched
#: there (written by ``sweep launch``, read by ``collect``)
SWEEPS = ".sweeps"


def positive_int(value: Any, name: str) -> int:
    """Run lengths must be positive (a run of 0 or -5 steps would "finish" untrained); sweep
    counts and SLURM resources too."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{name} must be a positive integer (got {value!r})")
    return value


def positive_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise UserError(f"{name} must be a positive number (got {value!r})")
    return value


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false (got {value!r})")
    return value


@dataclass(frozen=True)
class RunField:
    """What the rest of the suite reads about one ``RunArgs`` field: ``train``'s flag is derived
    from it (``cli.add_run_arguments``), so are a job's command line (``cli.run_flags``) and, for
    ``per_sweep`` fields, the sweep file's key of the same name (``sweep.spec``)."""

    help: str
    kind: str = "value"  # "value": --flag VALUE, parsed by ``parse``; "json": --flag JSON; "flag": --flag
    parse: Callable[[str], Any] | None = None  # the flag's text -> value (kind "value")
    check: Callable[[Any, str], Any] | None = None  # (value, name) -> value, or a UserError
    seeds: bool = False  # ``train-packed`` takes a list (one run per seed)
    per_sweep: bool = False  # a top-level sweep key, the same for every job of the sweep
    exclusive: str | None = None  # fields sharing this name may not both be given


def run_field(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A ``RunArgs`` field with its ``RunField``; a dict default is a fresh dict per run."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"run": RunField(**meta)})
    return field(default=default, metadata={"run": RunField(**meta)})


@dataclass
class RunArgs:
    """The scientific arguments of one run; their hash names its output directory.

    This is the one declaration of a run's fields: each field's ``RunField`` says how ``train``
    takes it, how a job's command line gives it and whether a sweep file sets it."""

    dataset: str = run_field(help="a registered dataset", parse=str)
    algorithm: str = run_field("ERM", help="a registered algorithm (default ERM)", parse=str)
    dataset_args: dict[str, Any] = run_field({}, kind="json", help='JSON, e.g. \'{"n_backgrounds": 8}\'')
    #: fixed overrides of the drawn values
    hparams: dict[str, Any] = run_field({}, kind="json", help='JSON overrides, e.g. \'{"lr": 0.005}\'')
    hparams_seed: int = run_field(0, help="which random hparams draw (0: the defaults)", parse=int)
    trial_seed: int = run_field(0, help="seed of the model and training", parse=int, seeds=True)
    data_seed: int = run_field(0, help="seed of the data (splits, sampling)", parse=int, seeds=True)
    steps: int | None = run_field(None, help="training steps", parse=int, check=positive_int,
                                  per_sweep=True, exclusive="length")
    epochs: float | None = run_field(None, help="training epochs", parse=float, check=positive_number,
                                     per_sweep=True, exclusive="length")
    #: steps; default one epoch (or 100 steps with --steps)
    checkpoint_freq: int | None = run_field(None, help="steps between evaluations (default: an epoch)",
                                            parse=int, check=positive_int, per_sweep=True)
    #: DomainBed's search: each trial seed draws its own hparams and selects among them (see
    #: ``trainer.draw_seed``); False, the suite's default, shares each draw across trial seeds
    hparams_per_trial: bool = run_field(
        False, kind="flag", check=boolean, per_sweep=True,
        help="DomainBed's search: draw hparams from (hparams seed, trial seed), not from the "
             "hparams seed alone")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, check = getattr(self, f.name), f.metadata["run"].check
            if check is not None and value is not None:
                check(value, f.name)
        # `train --epochs 3` parses a float, a sweep file's `epochs: 3` an int: one run, one id
        if isinstance(self.epochs, float) and self.epochs.is_integer():
            self.epochs = int(self.epochs)

    def as_dict(self) -> dict[str, Any]:
        """The arguments; ``hparams_per_trial`` only where set, so that runs from before it
        existed (and runs that leave it off) keep their dict, hence their id and directory."""
        d = dataclasses.asdict(self)
        if not self.hparams_per_trial:
            del d["hparams_per_trial"]
        return d

    def run_id(self) -> str:
        return args_id(self.as_dict())

    def readable_name(self) -> str:
        parts = [self.dataset, *(f"{k}{v}" for k, v in sorted(self.dataset_args.items())),
                 self.algorithm, *(f"{k}{v}" for k, v in sorted(self.hparams.items())),
                 f"h{self.hparams_seed}", f"t{self.trial_seed}", f"d{self.data_seed}",
                 *(["pertrial"] if self.hparams_per_trial else [])]
        # '+' becomes 'p' so that 1e+30 and 1e-30 differ ("1ep30", "1e-30"); other odd characters '-'
        name = "_".join(str(p) for p in parts).replace("+", "p")
        return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in name)[:120]

    def dir_name(self) -> str:
        return f"{self.readable_name()}-{self.run_id()}"


def args_id(args: dict[str, Any]) -> str:
    """``RunArgs.run_id`` of an arguments dict (e.g. one read back from a run dir)."""
    return stable_hash(args, 16)


@dataclass
class Record:
    args: dict[str, Any]
    hparams: dict[str, Any]
    dataset: dict[str, Any]
    step: int
    epoch: float
    losses: dict[str, float]
    metrics: dict[str, dict[str, Any]]
    wall_time: float
    device: str
    extra: dict[str, Any] = field(default_factory=dict)
    # multi-stage methods (docs/METHODS.md §P.4): the stage this checkpoint evaluates, of how many;
    # only final-stage checkpoints (stage == num_stages) are candidates for model selection
    stage: int = 1
    num_stages: int = 1


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN or infinity): an
    undefined metric or loss is null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


#: configuration sections of a record, where infinity is a value (RCL's margin m = ∞), not an
#: undefined result: stored as {"__float__": "inf"} so the arguments and their hash survive
CONFIG = ("args", "hparams")
_FLOAT = "__float__"


def encode_config(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT: repr(obj)}
    if isinstance(obj, dict):
        return {k: encode_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_config(v) for v in obj]
    return obj


def decode_config(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.keys() == {_FLOAT} and obj[_FLOAT] in ("inf", "-inf", "nan"):
            return float(obj[_FLOAT])
        return {k: decode_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_config(v) for v in obj]
    return obj


def record_line(record: dict[str, Any]) -> bytes:
    record = {k: encode_config(v) if k in CONFIG else v for k, v in record.items()}
    return (json.dumps(json_safe(record), allow_nan=False) + "\n").encode()


def append_record(path: Path, record: Record) -> None:
    line = record_line(dataclasses.asdict(record))
    with disk_full_is_user_error(path), open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete, parseable record; a torn or corrupt line is skipped."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and "step" in rec:
                yield {k: decode_config(v) if k in CONFIG else v for k, v in rec.items()}


def truncate_records(path: Path, last_step: int) -> None:
    """Keep only the records up to ``last_step`` (the resumed checkpoint), atomically."""
    kept = [r for r in read_records(path) if r["step"] <= last_step]
    blob = b"".join(record_line(r) for r in kept)
    atomic_write_bytes(path, lambda f: f.write(blob))
