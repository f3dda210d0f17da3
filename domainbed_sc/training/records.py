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
from typing import Any, Iterator

from ..cache import atomic_write_bytes, disk_full_is_user_error, stable_hash
from ..errors import UserError

RESULTS = "results.jsonl"
CHECKPOINT = "checkpoint.pt"
DONE = "done"
#: ``<output root>/.sweeps/<sweep>.json``: a sweep's ``selection`` and the job dirs it launched
#: there (written by ``sweep launch``, read by ``collect``)
SWEEPS = ".sweeps"


@dataclass
class RunArgs:
    """The scientific arguments of one run; their hash names its output directory."""

    dataset: str
    algorithm: str = "ERM"
    dataset_args: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)  # fixed overrides of the drawn values
    hparams_seed: int = 0
    trial_seed: int = 0
    data_seed: int = 0
    steps: int | None = None
    epochs: float | None = None
    checkpoint_freq: int | None = None  # steps; default one epoch (or 100 steps with --steps)
    #: DomainBed's search: each trial seed draws its own hparams and selects among them (see
    #: ``trainer.draw_seed``); False, the suite's default, shares each draw across trial seeds
    hparams_per_trial: bool = False

    def __post_init__(self) -> None:
        """Run lengths must be positive: a run of 0 or -5 steps would "finish" untrained."""
        for name in ("steps", "checkpoint_freq"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise UserError(f"{name} must be a positive integer (got {value!r})")
        epochs = self.epochs
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float))
                                   or not 0 < epochs < math.inf):
            raise UserError(f"epochs must be a positive number (got {epochs!r})")
        if not isinstance(self.hparams_per_trial, bool):
            raise UserError(f"hparams_per_trial must be true or false (got {self.hparams_per_trial!r})")

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
