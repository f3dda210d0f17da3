"""Wall time of one small sweep (20 jobs of a few steps) with each launcher.

    python benchmarks/sweep_launchers.py [--jobs 20] [--steps 20] [--dataset toy] [--slurm]

Each launcher starts from an empty output root and is timed from the ``domainbed-sc sweep
launch`` command to the last ``done`` (for SLURM: polled through ``sweep status``'s logic, so
queueing and job start-up count).  ``--slurm`` needs $SLURM_CONF pointing at a live cluster.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from domainbed_sc.sweep import sweep_jobs
from domainbed_sc.sweep.status import job_statuses

SWEEP = """datasets: [{dataset}]
algorithms: [ERM]
trial_seeds: {seeds}
steps: {steps}
checkpoint_freq: {steps}
"""


def timed_launch(path: Path, out: Path, launcher: list[str]) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "domainbed_sc", "sweep", "launch", str(path), "--output-root",
                    str(out), "--device", "cpu", *launcher], check=True, stdout=subprocess.DEVNULL)
    _, jobs = sweep_jobs(path, out)
    while not all(s.state in ("done", "failed", "interrupted (resumable)") for s in job_statuses(jobs)):
        time.sleep(0.5)
    states = [s.state for s in job_statuses(jobs)]
    if states.count("done") != len(jobs):
        raise SystemExit(f"{launcher}: not every job finished: {states}")
    return time.time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--dataset", default="toy", help="e.g. toy, or '{name: mnist_cifar, "
                                                    "dataset_args: {n_backgrounds: 1}}'")
    p.add_argument("--slurm", action="store_true", help="also time the slurm launcher")
    a = p.parse_args()
    runs = {"local": ["--launcher", "local"], "parallel (2 workers)": ["--launcher", "parallel", "--workers", "2"]}
    if a.slurm:
        runs["slurm"] = ["--launcher", "slurm", "--time", "10", "--cpus", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(SWEEP.format(dataset=a.dataset, seeds=list(range(a.jobs)), steps=a.steps))
        print(f"| launcher | {a.jobs} jobs of {a.steps} steps on {a.dataset}: wall time |\n|---|---|")
        for name, flags in runs.items():
            print(f"| {name} | {timed_launch(path, Path(tmp) / name.split()[0], flags):.1f} s |", flush=True)


if __name__ == "__main__":
    main()
