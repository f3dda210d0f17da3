"""TensorBoard event files of a run (``--tensorboard``, off by default): at every record its
mean losses (``loss/<name>``) and each split's numeric metrics (``<split>/acc``, ``<split>/wga``,
...) at the record's step, in the run dir beside ``results.jsonl``, so ``tensorboard --logdir
runs/`` shows every run's curves.  results.jsonl stays the record; these files follow it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from .records import Record


def summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, imported only for runs that write events (the
    import is slow), or a ``UserError`` before the run starts if tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


def open_events(writer_cls: type, run_dir: Path, step: int) -> Any:
    """A writer for a run resumed at ``step`` (0: a fresh run).  Readers drop the points of
    earlier writers from ``purge_step`` on: those past the checkpoint were never kept in
    results.jsonl either, and the resumed run writes them again; the checkpoint's own record
    stays, as it is not written again."""
    return writer_cls(log_dir=str(run_dir), purge_step=step + 1)


def write_events(writer: Any, record: Record) -> None:
    for name, value in record.losses.items():
        writer.add_scalar(f"loss/{name}", value, record.step)
    for split, metrics in record.metrics.items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"{split}/{name}", value, record.step)
    writer.flush()  # a killed run keeps its points up to its last record, as results.jsonl does
