"""The SLURM launcher on a real one-node cluster (fixture in conftest_slurm.py): a sweep completes,
a failing job is reported and succeeds after ``relaunch --failed``, and a preempted job is
requeued and resumes from its checkpoint without losing or duplicating records."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from domainbed_sc.cli import main
from domainbed_sc.sweep import JobEnv, sweep_jobs
from domainbed_sc.sweep.jobs import read_state
from domainbed_sc.sweep.launchers import SlurmLauncher, launch_jobs
from domainbed_sc.sweep.spec import Resources
from domainbed_sc.sweep.status import job_statuses
from domainbed_sc.training.records import CHECKPOINT, DONE, RESULTS, read_records
from domainbed_sc.training.run_dir import RUN_FILE

pytest_plugins = ["conftest_slurm"]
pytestmark = pytest.mark.slurm

SWEEP = """
datasets: [{{name: toy, dataset_args: {{n_train: {n_train}}}}}]
algorithms: [ERM]
trial_seeds: {seeds}
steps: {steps}
checkpoint_freq: {freq}
"""


def write_sweep(tmp_path: Path, seeds: list[int], steps: int = 20, freq: int = 10,
                n_train: int = 512) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(seeds=seeds, steps=steps, freq=freq, n_train=n_train))
    return path


def slurm_cli(action: str, path: Path, out: Path, *extra: str) -> int:
    return main(["sweep", action, str(path), "--output-root", str(out), "--launcher", "slurm",
                 "--time", "5", "--device", "cpu", *extra])


def wait_until_finished(jobs, timeout: float = 150) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = [s.state for s in job_statuses(jobs)]
        if all(state in ("done", "failed", "interrupted (resumable)") for state in states):
            return states
        time.sleep(0.5)
    raise AssertionError(f"SLURM jobs did not finish in {timeout} s: {states}")


def steps_of(job) -> list[int]:
    return [r["step"] for r in read_records(job.dir / RESULTS)]


def test_slurm_sweep_completes_with_the_requested_resources(slurm_cluster, tmp_path, capsys):
    path = write_sweep(tmp_path, [0, 1, 2, 3])
    out = tmp_path / "out"
    assert slurm_cli("launch", path, out, "--partition", "debug", "--mem", "1G", "--cpus", "1",
                  "--sbatch", "comment=domainbed-sc-test", "--array-parallelism", "4") == 0
    assert "submitted 4 jobs to SLURM" in capsys.readouterr().out
    _, jobs = sweep_jobs(path, out)
    ids = [read_state(j.dir).job_id for j in jobs]
    assert len(set(ids)) == 4 and len({i.split("_")[0] for i in ids}) == 1  # one array
    script = (out / ".submitit" / f"{ids[0].split('_')[0]}_submission.sh").read_text()
    for line in ("--partition=debug", "--mem=1G", "--cpus-per-task=1", "--comment=domainbed-sc-test",
                 "--time=5", "--array=0-3%4", "--signal=USR2@90"):
        assert line in script, line
    assert wait_until_finished(jobs) == ["done"] * 4
    for job in jobs:
        assert steps_of(job) == [10, 20]
        assert read_state(job.dir).launcher == "slurm"
    main(["sweep", "status", str(path), "--output-root", str(out)])
    table = capsys.readouterr().out
    assert table.startswith("4 jobs: done 4") and all(i in table for i in ids)
    assert slurm_cli("launch", path, out) == 0  # nothing left to do: nothing submitted
    assert "nothing to run" in capsys.readouterr().out


def test_failed_slurm_job_is_reported_and_relaunched(slurm_cluster, tmp_path, capsys):
    path = write_sweep(tmp_path, [0, 1])
    out = tmp_path / "out"
    _, jobs = sweep_jobs(path, out)
    jobs[1].dir.mkdir(parents=True)
    # a dir that holds another run: refused (a corrupt checkpoint would only restart the run)
    (jobs[1].dir / RUN_FILE).write_text(json.dumps({"run_id": "0", "args": {"dataset": "other"}}))
    assert slurm_cli("launch", path, out) == 0
    assert wait_until_finished(jobs) == ["done", "failed"]
    failed = job_statuses(jobs)[1]
    assert failed.error and failed.job_id and "holds another run" in failed.error
    first_done = (jobs[0].dir / DONE).stat().st_mtime_ns

    (jobs[1].dir / RUN_FILE).unlink()  # the fix
    assert slurm_cli("relaunch", path, out, "--failed") == 0
    assert "submitted 1 jobs" in capsys.readouterr().out
    assert wait_until_finished(jobs) == ["done", "done"]
    assert read_state(jobs[1].dir).job_id != failed.job_id
    assert (jobs[0].dir / DONE).stat().st_mtime_ns == first_done
    assert steps_of(jobs[1]) == [10, 20]


def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    steps, freq = 400, 20
    path = write_sweep(tmp_path, [0], steps=steps, freq=freq, n_train=8192)
    out = tmp_path / "out"
    _, jobs = sweep_jobs(path, out)
    job = jobs[0]
    launcher = SlurmLauncher(Resources(time=5), out / ".submitit", "requeue-test")
    [sjob] = launch_jobs(jobs, launcher, JobEnv(tmp_path / "data", "cpu"))
    deadline = time.time() + 120
    while not (job.dir / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (job.dir / CHECKPOINT).exists(), "the job never reached its first checkpoint"
    sjob._interrupt()  # preemption: SIGTERM, then USR2 -> checkpoint() and requeue
    assert wait_until_finished(jobs) == ["done"]
    log = (job.dir / "log.txt").read_text()
    assert "resumed from step" in log, "the job must have been interrupted midway"
    resumed_at = int(log.split("resumed from step ")[1].split()[0])
    assert 0 < resumed_at < steps
    assert steps_of(job) == list(range(freq, steps + 1, freq))  # none lost, none twice
    assert log.count("final step") == 1
    assert read_state(job.dir).job_id == sjob.job_id  # requeued, not resubmitted
    submitit_log = sjob.paths.stdout.read_text()
    assert "Calling checkpoint method" in submitit_log and f"Requeued job {sjob.job_id}" in submitit_log
