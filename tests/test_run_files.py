"""Where to look: `train` says where its log and records go before it starts, and `sweep status`
shows a failed job's last log line (how far it got)."""
from __future__ import annotations

import re

from domainbed_sc.cli import main
from domainbed_sc.errors import UserError
from domainbed_sc.sweep import jobs as jobs_module
from domainbed_sc.sweep import sweep_jobs
from domainbed_sc.sweep.status import format_status, job_statuses, last_log_line
from domainbed_sc.training import trainer
from domainbed_sc.training.records import LOG, RESULTS

TRAIN = ["train", "--dataset", "toy", "--steps", "2", "--quiet", "--device", "cpu"]


def test_train_prints_its_log_and_records_first(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--data-dir", str(tmp_path), "--output-dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"log: {out / LOG}", f"records: {out / RESULTS}"]
    assert (out / LOG).is_file() and (out / RESULTS).is_file()


def test_train_prints_them_before_training(tmp_path, capsys, monkeypatch):
    def failing_train(args, opts):
        raise UserError("stopped before the first step")

    monkeypatch.setattr(trainer, "train", failing_train)
    assert main([*TRAIN, "--data-dir", str(tmp_path), "--output-root", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert "stopped before the first step" in captured.err
    assert re.match(rf"log: {tmp_path / 'r'}/toy_ERM_h0_t0_d0-\w+/log.txt\n", captured.out)


def test_status_shows_a_failed_jobs_last_log_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "sweep.yaml"
    path.write_text("datasets: [toy]\nalgorithms: [ERM]\ntrial_seeds: [0, 1]\nsteps: 10\n")
    out = tmp_path / "out"
    _, jobs = sweep_jobs(path, out)
    real_train = jobs_module.train

    def diverging_train(args, opts):  # logs two evaluations, then dies
        if args != jobs[1].args:
            return real_train(args, opts)
        (opts.output_dir / LOG).write_text("... INFO step 5 train=0.61\n... INFO step 10 loss nan\n\n")
        raise RuntimeError("loss is nan")

    monkeypatch.setattr(jobs_module, "train", diverging_train)
    assert main(["sweep", "launch", str(path), "--output-root", str(out), "--device", "cpu",
                 "--launcher", "local"]) == 2
    capsys.readouterr()
    assert main(["sweep", "status", str(path), "--output-root", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"{jobs[1].name}\s+failed\s+.*RuntimeError: loss is nan\s+\.\.\. INFO step 10 loss nan", text)
    assert "last log line" in text.splitlines()[1]
    done_row = next(line for line in text.splitlines() if line.startswith(jobs[0].name))
    assert "INFO" not in done_row  # a done job's log is not shown


def test_no_log_column_without_a_failed_jobs_log(tmp_path):
    from domainbed_sc.sweep.jobs import JobState, write_state

    path = tmp_path / "sweep.yaml"
    path.write_text("datasets: [toy]\nalgorithms: [ERM]\nsteps: 10\n")
    _, jobs = sweep_jobs(path, tmp_path / "out")
    write_state(jobs[0].dir, JobState("failed", "local", error="boom"))
    statuses = job_statuses(jobs)
    assert statuses[0].log is None and "last log line" not in format_status(statuses)


def test_last_log_line_of_a_long_log_and_of_none(tmp_path):
    from domainbed_sc.sweep.jobs import Job
    from domainbed_sc.training.records import RunArgs

    job = Job(RunArgs("toy"), tmp_path)
    assert last_log_line(job) is None
    (tmp_path / LOG).write_text("".join(f"step {i}\n" for i in range(100_000)) + "\n")
    assert last_log_line(job) == "step 99999"
