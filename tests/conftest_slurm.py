"""Session fixture ``slurm_cluster``: a real one-node SLURM cluster for ``@pytest.mark.slurm`` tests.

Uses the cluster ``$SLURM_CONF`` points at when ``sinfo`` answers; otherwise starts one with the
project's ``start-local-slurm.sh`` (``$DOMAINBED_SC_SLURM_SCRIPTS``, default ``../shared/slurm``
beside the repo) in /tmp/slurm-ci, and stops it at the end of the session.  Skips, saying why,
where that cannot work (not root, no script, no apt-get to install SLURM, or the start fails).
Loaded by ``pytest_plugins = ["conftest_slurm"]`` in the tests that need it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(os.environ.get("DOMAINBED_SC_SLURM_SCRIPTS", REPO.parent / "shared" / "slurm"))
STATE_DIR = "/tmp/slurm-ci"


def sinfo_answers() -> bool:
    if shutil.which("sinfo") is None or not os.environ.get("SLURM_CONF"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def cannot_start() -> str | None:
    """Why this machine cannot start the local cluster, or None."""
    if os.geteuid() != 0:
        return "starting the local SLURM cluster needs root"
    if not (SCRIPTS / "start-local-slurm.sh").exists():
        return f"no start-local-slurm.sh in {SCRIPTS} (set DOMAINBED_SC_SLURM_SCRIPTS)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def stop() -> None:
    subprocess.run(["bash", str(SCRIPTS / "stop-local-slurm.sh"), STATE_DIR], capture_output=True,
                   timeout=120)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Yields the SLURM_CONF path, with SLURM_CONF set in this process's environment."""
    if sinfo_answers():
        yield os.environ["SLURM_CONF"]
        return
    reason = cannot_start()
    if reason:
        pytest.skip(reason)
    # ports of our own, so a developer's cluster on the default ports does not collide with it
    env = {**os.environ, "SLURM_LOCAL_PORT_BASE": os.environ.get("SLURM_LOCAL_PORT_BASE", "7817")}
    proc = subprocess.run(["bash", str(SCRIPTS / "start-local-slurm.sh"), STATE_DIR],
                          capture_output=True, text=True, timeout=900, env=env)
    exports = [line for line in proc.stdout.splitlines() if line.startswith("export SLURM_CONF=")]
    if proc.returncode != 0 or not exports:
        stop()  # daemons it did start (munged, ...) must not outlive the session
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        pytest.skip(f"could not start the local SLURM cluster: {tail}")
    conf = exports[-1].split("=", 1)[1]
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # submitit's sbatch/sacct calls read it from here
    try:
        yield conf
    finally:
        stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
