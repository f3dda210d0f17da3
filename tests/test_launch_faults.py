"""A parallel launcher whose worker process is killed says so in one line (no traceback), and the
next launch resumes every job (the fault-injection script, benchmarks/fault_injection.py, found
the traceback)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import fault_injection  # noqa: E402

from domainbed_sc.cli import main  # noqa: E402
from domainbed_sc.sweep import sweep_jobs  # noqa: E402
from domainbed_sc.training.records import CHECKPOINT, DONE, RESULTS, read_records  # noqa: E402


def _launch_parallel(sweep: Path, out: Path, output: int) -> subprocess.Popen:
    """A 2-worker parallel launch in its own session (so killpg reaches every worker)."""
    return subprocess.Popen([sys.executable, "-m", "domainbed_sc", "sweep", "launch", str(sweep),
                             "--output-root", str(out), "--device", "cpu", "--launcher", "parallel",
                             "--workers", "2"], stdout=output, stderr=output, text=True,
                            env=fault_injection.ENV, start_new_session=True)


def test_a_killed_worker_is_one_line_and_the_next_launch_resumes(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(fault_injection.SWEEP.format(seeds=[0, 1, 2, 3], steps=400, freq=40))
    out = tmp_path / "out"
    _, jobs = sweep_jobs(sweep, out)
    proc = _launch_parallel(sweep, out, subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not any((j.dir / CHECKPOINT).exists() for j in jobs) and time.time() < deadline:
            time.sleep(0.05)
        pool = fault_injection.workers(proc.pid)
        assert pool, "the pool must be running"
        os.kill(pool[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2 and "Traceback" not in err, err
    # besides multiprocessing's resource tracker, which may warn of the dead worker's semaphores
    lines = [line for line in err.strip().splitlines() if "resource_tracker" not in line]
    assert len(lines) == 1 and "a worker process died" in lines[0], err

    assert main(["sweep", "launch", str(sweep), "--output-root", str(out), "--device", "cpu"]) == 0
    for job in jobs:
        assert (job.dir / DONE).exists()
        assert [r["step"] for r in read_records(job.dir / RESULTS)] == list(range(40, 401, 40))


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_launcher_takes_its_workers_with_it(tmp_path):
    """SIGKILL to the launcher alone (not its process group): its workers must not train on as
    orphans holding their jobs' locks, or the next launch skips those jobs as running."""
    if not sys.platform.startswith("linux"):
        return
    sweep = tmp_path / "s.yaml"
    sweep.write_text(fault_injection.SWEEP.format(seeds=[0, 1], steps=4000, freq=40))
    out = tmp_path / "out"
    _, jobs = sweep_jobs(sweep, out)
    proc = _launch_parallel(sweep, out, subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not any((j.dir / CHECKPOINT).exists() for j in jobs) and time.time() < deadline:
            time.sleep(0.05)
        pool = fault_injection.workers(proc.pid)
        assert pool, "the pool must be running"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while any(_alive(pid) for pid in pool) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pool), "workers outlived their launcher"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    statuses = subprocess.run([sys.executable, "-m", "domainbed_sc", "sweep", "status", str(sweep),
                               "--output-root", str(out)], capture_output=True, text=True).stdout
    assert statuses.splitlines()[0] == "2 jobs: interrupted (resumable) 2", statuses
