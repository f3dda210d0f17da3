"""``sweep launch --pack K``: jobs that differ only in their seeds run K at a time through
train_packed, the others alone; claims, done jobs and failures behave as with run_job."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from domainbed_sc.cli import main
from domainbed_sc.sweep import JobEnv, sweep_jobs
from domainbed_sc.sweep import packing
from domainbed_sc.sweep.jobs import Outcome, read_state, try_claim
from domainbed_sc.sweep.status import job_statuses
from domainbed_sc.training.records import DONE, RESULTS, read_records

pytest_plugins = ["conftest_slurm"]
pytestmark = pytest.mark.usefixtures("local_launcher_by_default")

SWEEP = """
datasets: [toy]
algorithms: [ERM, GroupDRO]
hparams: {lr: 0.01}
trial_seeds: [0, 1, 2]
data_seeds: [0, 1]
steps: 20
checkpoint_freq: 10
"""


def sweep(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    return path


def launch(path: Path, out: Path, *flags) -> int:
    return main(["sweep", "launch", str(path), "--output-root", str(out), "--device", "cpu", *map(str, flags)])


def test_group_packs_keeps_order_and_packs_only_seeds(tmp_path):
    _, jobs = sweep_jobs(sweep(tmp_path), tmp_path / "out")
    units = packing.group_packs(jobs, 4)
    names = [[j.args.algorithm for j in unit] for unit in units]
    assert names == [["ERM"] * 4, ["ERM"] * 2] + [["GroupDRO"]] * 6  # GroupDRO is not packable
    assert [j for unit in units for j in unit] == jobs
    assert packing.group_packs(jobs, 1) == [[j] for j in jobs]


def test_packed_launch_equals_unpacked_launch(tmp_path, capsys):
    path = sweep(tmp_path)
    assert launch(path, tmp_path / "plain") == 0
    assert launch(path, tmp_path / "packed", "--pack", 3) == 0
    assert "launch: 12 ran, 0 failed" in capsys.readouterr().out
    _, plain = sweep_jobs(path, tmp_path / "plain")
    _, packed = sweep_jobs(path, tmp_path / "packed")
    for a, b in zip(plain, packed):
        assert (b.dir / DONE).exists() and read_state(b.dir).state == "done"
        got, want = list(read_records(b.dir / RESULTS)), list(read_records(a.dir / RESULTS))
        assert [r["step"] for r in got] == [r["step"] for r in want] == [10, 20]
        for g, w in zip(got, want):
            assert g["losses"]["loss"] == pytest.approx(w["losses"]["loss"], abs=1e-4)
            assert g["metrics"]["test"]["acc"] == pytest.approx(w["metrics"]["test"]["acc"], abs=1e-4)
        packed_log = "training packed" in (b.dir / "log.txt").read_text()
        assert packed_log == (b.args.algorithm == "ERM")


def test_parallel_launcher_packs(tmp_path, capsys):
    path = sweep(tmp_path)
    assert launch(path, tmp_path / "out", "--launcher", "parallel", "--workers", 2, "--pack", 6) == 0
    assert "launch: 12 ran, 0 failed" in capsys.readouterr().out
    _, jobs = sweep_jobs(path, tmp_path / "out")
    assert all(read_state(j.dir).state == "done" and read_state(j.dir).launcher == "parallel" for j in jobs)


def test_run_pack_skips_done_and_claimed_jobs(tmp_path):
    _, jobs = sweep_jobs(sweep(tmp_path), tmp_path / "out")
    erm = jobs[:3]
    erm[0].dir.mkdir(parents=True)
    (erm[0].dir / DONE).write_text("done\n")
    claim = try_claim(erm[1].dir)  # another launcher runs it
    try:
        outcomes = packing.run_pack(erm, JobEnv(tmp_path / "data", "cpu"), "local")
    finally:
        claim.release()
    assert outcomes == [Outcome.DONE, Outcome.CLAIMED, Outcome.RAN]
    assert not (erm[1].dir / RESULTS).exists() and (erm[2].dir / DONE).exists()


def test_failing_pack_fails_each_job_and_relaunch_runs_them(tmp_path, capsys, monkeypatch):
    path = sweep(tmp_path)
    out = tmp_path / "out"

    def crash(members):
        raise RuntimeError("boom in the pack")

    monkeypatch.setattr("domainbed_sc.training.packed.train_packed", crash)
    assert launch(path, out, "--pack", 6) == 2
    assert "6 ran, 6 failed" in capsys.readouterr().out
    _, jobs = sweep_jobs(path, out)
    failed = [j for j in jobs if read_state(j.dir).state == "failed"]
    assert [j.args.algorithm for j in failed] == ["ERM"] * 6
    assert all("boom in the pack" in read_state(j.dir).error for j in failed)
    assert all("boom in the pack" in (j.dir / "error.txt").read_text() for j in failed)
    monkeypatch.undo()
    assert main(["sweep", "relaunch", str(path), "--failed", "--output-root", str(out), "--device", "cpu",
                 "--pack", "6"]) == 0
    assert all((j.dir / DONE).exists() for j in jobs)


def test_pack_must_be_positive(tmp_path, capsys):
    assert launch(sweep(tmp_path), tmp_path / "out", "--pack", 0) == 2
    assert "--pack must be at least 1" in capsys.readouterr().err


@pytest.mark.slurm
def test_slurm_runs_one_array_task_per_pack(slurm_cluster, tmp_path, capsys):
    path = sweep(tmp_path)
    out = tmp_path / "out"
    assert launch(path, out, "--launcher", "slurm", "--time", 5, "--cpus", 1, "--pack", 3) == 0
    assert "submitted 12 jobs to SLURM" in capsys.readouterr().out
    _, jobs = sweep_jobs(path, out)
    ids = [read_state(j.dir).job_id for j in jobs]
    assert ids[:3] == [ids[0]] * 3 and ids[3:6] == [ids[3]] * 3 and ids[0] != ids[3]
    assert len(set(ids)) == 2 + 6  # two ERM packs of 3, six GroupDRO tasks of one job
    deadline = time.time() + 300
    while any(s.state not in ("done", "failed") for s in job_statuses(jobs)) and time.time() < deadline:
        time.sleep(0.5)
    assert [s.state for s in job_statuses(jobs)] == ["done"] * 12
    assert all("training packed" in (j.dir / "log.txt").read_text() for j in jobs[:6])
