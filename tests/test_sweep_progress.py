"""`sweep launch` picks the parallel launcher on CPU-only machines and says so; a progress bar
with an ETA from measured job times; `sweep status` prints the same ETA from the records."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from domainbed_sc.cli import main
from domainbed_sc.sweep import launchers, sweep_jobs
from domainbed_sc.sweep.jobs import Job, Outcome
from domainbed_sc.sweep.progress import LaunchProgress, duration, last_wall_time
from domainbed_sc.training.records import DONE, RESULTS, RunArgs

SWEEP = "datasets: [toy]\nalgorithms: [ERM]\ntrial_seeds: [0, 1, 2, 3]\nsteps: 20\ncheckpoint_freq: 10\n"


def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    return path


def launched_with(tmp_path, monkeypatch, capsys, cuda: bool, *flags):
    """(first output line, launcher) of a launch whose jobs are not run."""
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(launchers, "launch_jobs", lambda jobs, launcher, env, failed: seen.append(launcher) or [])
    assert main(["sweep", "launch", str(sweep_file(tmp_path)), "--output-root", str(tmp_path / "o"),
                 "--device", "cpu", *flags]) == 0
    return capsys.readouterr().out.splitlines()[0], seen[0]


def test_without_a_gpu_the_default_is_one_single_threaded_worker_per_core(tmp_path, monkeypatch, capsys):
    first, launcher = launched_with(tmp_path, monkeypatch, capsys, False)
    cores = len(os.sched_getaffinity(0))
    assert isinstance(launcher, launchers.ParallelLauncher) and launcher.workers == cores
    assert f"launcher parallel, {cores} workers x 1 thread (the default without a GPU" in first


def test_with_a_gpu_or_a_given_launcher_the_choice_is_kept(tmp_path, monkeypatch, capsys):
    first, launcher = launched_with(tmp_path, monkeypatch, capsys, True)
    assert isinstance(launcher, launchers.LocalLauncher) and "launcher local (the default with a GPU)" in first
    first, launcher = launched_with(tmp_path, monkeypatch, capsys, False, "--launcher", "local")
    assert isinstance(launcher, launchers.LocalLauncher) and first.endswith("launcher local (given)")


def test_launch_progress_eta_from_measured_jobs(tmp_path, capsys):
    jobs = [Job(RunArgs("toy", trial_seed=t), tmp_path / f"j{t}") for t in range(6)]
    progress = LaunchProgress(len(jobs), workers=2)
    assert progress.eta == "ETA unknown until a job finishes"
    progress.unit_done(jobs[:1], [Outcome.DONE], 0.0)  # already done: no measurement
    assert progress.eta == "ETA unknown until a job finishes"
    progress.unit_done(jobs[1:3], [Outcome.RAN, Outcome.RAN], 40.0)  # a pack of 2: 20 s per job
    assert progress.eta == "ETA 30s"  # 3 jobs left x 20 s / 2 workers
    progress.unit_done(jobs[3:4], [Outcome.FAILED], 100.0)  # 140 s / 3 jobs x 2 left / 2 workers
    assert progress.eta == "ETA 47s"
    progress.close()
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-3] for line in out] == ["j0", "j1", "j2", "j3"] and "already done" in out[0]


def test_status_prints_counts_and_eta_from_wall_times(tmp_path, capsys, local_launcher_by_default):
    path = sweep_file(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", "launch", str(path), "--output-root", str(out), "--device", "cpu"]) == 0
    _, jobs = sweep_jobs(path, out)
    assert main(["sweep", "status", str(path), "--output-root", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("all jobs done")
    walls = [last_wall_time(j) for j in jobs[:2]]
    for job in jobs[2:]:  # two jobs never ran
        shutil.rmtree(job.dir)
    assert main(["sweep", "status", str(path), "--output-root", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("4 jobs: not launched 2, done 2")
    expected = duration(sum(walls) / 2 * 2)
    assert re.search(rf"{expected} \(2.0 jobs' work left, at one job at a time; from 2 finished", text)
