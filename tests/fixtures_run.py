"""A crafted checkpoint payload for the tests that loading a checkpoint never runs code."""
from __future__ import annotations

from pathlib import Path


class RunsCode:
    """Unpickling this creates a file: what a malicious checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)
