"""Faults for the run tests: a crafted checkpoint payload (loading a checkpoint must never run
code) and an in-process stand-in for killing a run after a checkpoint."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from domainbed_sc.training.trainer import Run


class RunsCode:
    """Unpickling this creates a file: what a malicious checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


class Killed(Exception):
    """Raised by ``killed_after`` where a real run would have been SIGKILLed."""


@contextlib.contextmanager
def killed_after(step: int):
    """Stop a run right after it has checkpointed ``step``: the records and checkpoint on disk are
    what a SIGKILL at that moment leaves, at no subprocess start-up cost.  It stops after the
    checkpoint has landed (renamed into place), not inside ``torch.save``: there the write of
    ``step`` would be lost and the run would resume from the checkpoint before (from scratch
    after the first), which any run passes."""

    def save_checkpoint(run):
        real(run)
        if run.step >= step:
            raise Killed()

    real = Run.save_checkpoint
    with pytest.raises(Killed), pytest.MonkeyPatch.context() as mp:
        mp.setattr(Run, "save_checkpoint", save_checkpoint)
        yield
