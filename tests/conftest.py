"""Shared fixtures.  Real-data tests read $DOMAINBED_SC_DATA (CI copies the shared data there)."""
from __future__ import annotations

from pathlib import Path

import pytest

from domainbed_sc.datasets.sources import resolve_data_dir
from domainbed_sc.training.records import RESULTS, RunArgs, read_records
from domainbed_sc.training.trainer import RunOptions, train


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The data dir with the real MNIST / CIFAR-10 files; skips the test where they are missing."""
    path = resolve_data_dir(None)
    if not (path / "MNIST" / "raw").exists():
        pytest.skip(f"real MNIST not found under {path} (set DOMAINBED_SC_DATA)")
    return path


@pytest.fixture
def run_toy(tmp_path):
    """Train one run on the synthetic toy dataset; returns (out_dir, records)."""

    def _run(algorithm="ERM", name="run", device="cpu", **kw):
        kw.setdefault("epochs", 2)
        args = RunArgs(dataset=kw.pop("dataset", "toy"), algorithm=algorithm, **kw)
        out = train(args, RunOptions(tmp_path / name, tmp_path / "data", device, progress=False))
        return out, list(read_records(out / RESULTS))

    return _run


@pytest.fixture
def local_launcher_by_default(monkeypatch):
    """Pin `sweep launch` without --launcher to the in-process local launcher (the default on a
    CPU-only machine is the parallel one), for tests that patch this process or assume order."""
    from domainbed_sc.commands import sweep

    monkeypatch.setattr(sweep, "default_launcher", lambda: ("local", "pinned by the tests"))
