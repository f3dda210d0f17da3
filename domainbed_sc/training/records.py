"""Run arguments and result records, and the results.jsonl file they live in.

``results.jsonl`` holds one JSON object per checkpoint.  Appends are a single ``write`` of a
whole line followed by fsync; readers skip a truncated last line, so a killed run never leaves a
record that breaks the collector.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..cache import atomic_write_bytes, stable_hash

RESULTS = "results.jsonl"
CHECKPOINT = "checkpoint.pt"
DONE = "done"


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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_id(self) -> str:
        return stable_hash(self.as_dict(), 16)

    def readable_name(self) -> str:
        parts = [self.dataset, *(f"{k}{v}" for k, v in sorted(self.dataset_args.items())),
                 self.algorithm, *(f"{k}{v}" for k, v in sorted(self.hparams.items())),
                 f"h{self.hparams_seed}", f"t{self.trial_seed}", f"d{self.data_seed}"]
        # '+' becomes 'p' so that 1e+30 and 1e-30 differ ("1ep30", "1e-30"); other odd characters '-'
        name = "_".join(str(p) for p in parts).replace("+", "p")
        return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in name)[:120]

    def dir_name(self) -> str:
        return f"{self.readable_name()}-{self.run_id()}"


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


def append_record(path: Path, record: Record) -> None:
    line = (json.dumps(dataclasses.asdict(record), allow_nan=True) + "\n").encode()
    with open(path, "ab") as f:
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
                yield rec


def truncate_records(path: Path, last_step: int) -> None:
    """Keep only the records up to ``last_step`` (the resumed checkpoint), atomically."""
    kept = [r for r in read_records(path) if r["step"] <= last_step]
    blob = b"".join((json.dumps(r) + "\n").encode() for r in kept)
    atomic_write_bytes(path, lambda f: f.write(blob))
