"""Input validation: hparams and dataset arguments by type and range (the same check in ``train``
and in sweep validation), label requirements of the configured dataset variant, faulty sweep
files, runaway grids and launcher options.  Every error is one line, never a traceback."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from domainbed_sc.cli import main
from domainbed_sc.errors import UserError
from domainbed_sc.sweep import sweep_jobs
from domainbed_sc.training.records import RunArgs
from domainbed_sc.training.trainer import check_run

BAD = [  # (hparams, dataset_args, the error's words)
    ({"batch_size": 2.5}, {}, "hyperparameter batch_size=2.5 has the wrong type (expected an integer > 0)"),
    ({"lr": None}, {}, "hyperparameter lr=None has the wrong type (expected a number > 0)"),
    ({"nesterov": 1}, {}, "hyperparameter nesterov=1 has the wrong type (expected a boolean)"),
    ({"lr_milestones": ["x"]}, {}, "hyperparameter lr_milestones=['x'] has the wrong type "
                                   "(expected a list of numbers >= 0)"),
    ({"lr_milestones": [2, -1]}, {}, "invalid value for hyperparameter lr_milestones: [2, -1]"),
    ({"lr": float("nan")}, {}, "invalid value for hyperparameter lr: nan (expected a number > 0)"),
    ([0.01], {}, "hparams must be a JSON object / mapping of names to values, got [0.01]"),
    ({}, 3, "toy: dataset_args must be a JSON object / mapping of names to values, got 3"),
    ({}, {"n_train": "ten"}, "toy dataset argument n_train='ten' has the wrong type "
                             "(expected an integer >= 2)"),
    ({}, {"n_train": -5}, "invalid value for toy dataset argument n_train: -5 (expected an integer >= 2)"),
    ({}, {"n_train": 64.0}, "toy dataset argument n_train=64.0 has the wrong type"),
    ({}, {"correlation": 1.5}, "invalid value for toy dataset argument correlation: 1.5 "
                               "(expected a number in [0, 1])"),
    ({}, {"noise": None}, "toy dataset argument noise=None has the wrong type"),
]


def one_line_error(capsys, *argv: str) -> str:
    """The CLI's error for argv: exit status 2 and exactly one line on stderr."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("hparams, dataset_args, message", BAD)
def test_check_run_refuses_bad_values_by_type_and_range(hparams, dataset_args, message):
    with pytest.raises(UserError) as info:
        check_run(RunArgs("toy", "ERM", dataset_args, hparams))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("hparams, dataset_args, message", BAD)
def test_sweep_validation_refuses_the_same_values(tmp_path, hparams, dataset_args, message):
    import json

    sweep = {"datasets": [{"name": "toy", "dataset_args": dataset_args}],
             "algorithms": [{"name": "ERM", "hparams": hparams}]}
    (tmp_path / "s.yaml").write_text(json.dumps(sweep).replace("NaN", ".nan"))  # JSON is YAML
    with pytest.raises(UserError) as info:
        sweep_jobs(tmp_path / "s.yaml", tmp_path / "out")
    text = str(info.value)
    if isinstance(hparams, list) or not isinstance(dataset_args, dict):  # the file's own check
        assert "must be a mapping" in text
    else:
        assert message in text


@pytest.mark.parametrize("args, message", [
    (["--hparams", "[0.01]"], "hparams must be a JSON object"),
    (["--dataset-args", "3"], "toy: dataset_args must be a JSON object"),
    (["--hparams", '{"batch_size": 2.5}'], "batch_size=2.5 has the wrong type"),
    (["--hparams", '{"lr_milestones": ["x"]}'], "lr_milestones=['x'] has the wrong type"),
    (["--dataset-args", '{"correlation": 1.5}'], "correlation: 1.5 (expected a number in [0, 1])"),
])
def test_train_cli_errors_are_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "o"
    assert message in one_line_error(capsys, "train", "--dataset", "toy", *args, "--output-dir", str(out))
    assert not out.exists()  # refused before anything is written


def test_valid_values_pass_and_ints_count_as_numbers():
    check_run(RunArgs("toy", "ERM", {"n_train": 64, "correlation": 1, "noise": 0.5},
                      {"lr": 1, "lr_milestones": [1, 2.5], "batch_size": 32}))
    check_run(RunArgs("waterbirds", "ERM", {"num_workers": None, "augment": True}))


# -- label requirements of the configured variant ---------------------------------------------
def _sweep(tmp_path: Path, dataset: str, variant: str, algorithm: str = "IRM") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"datasets: [{{name: {dataset}, dataset_args: {{variant: {variant}}}}}]\n"
                    f"algorithms: [{algorithm}]\n")
    return path


def test_irm_on_single_environment_cmnist_is_refused_before_any_job(tmp_path):
    with pytest.raises(UserError, match=r"IRM on cmnist: .*needs environment labels \(e\), which "
                                        r'dataset cmnist \{"variant": "chroma"\} does not provide'):
        sweep_jobs(_sweep(tmp_path, "cmnist", "chroma"), tmp_path / "out")
    sweep_jobs(_sweep(tmp_path, "cmnist", "domainbed"), tmp_path / "out")  # has environments


def test_irm_on_waterbirds_with_environments_is_accepted(tmp_path):
    sweep, jobs = sweep_jobs(_sweep(tmp_path, "waterbirds", "ex2l_envs"), tmp_path / "out")
    assert len(jobs) == 1  # and no data was read: there is none under tmp_path
    with pytest.raises(UserError, match="IRM on waterbirds: .*environment labels"):
        sweep_jobs(_sweep(tmp_path, "waterbirds", "standard"), tmp_path / "out")


# -- sweep files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 4, "not a text (UTF-8) file"),
    (b"datasets: [toy\nalgorithms: [ERM]\n", "not valid YAML: expected ',' or ']', but got ':' (line 2, column 11)"),
    (b"datasets:\n  - toy\n bad: 1\n", "not valid YAML:"),
    (b"a: b: c\n", "not valid YAML: mapping values are not allowed here (line 1, column 5)"),
])
def test_faulty_sweep_files_give_one_line_naming_file_and_fault(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    line = one_line_error(capsys, "sweep", "launch", str(path), "--dry-run")
    assert str(path) in line and message in line, line


def test_a_directory_as_sweep_file_is_named_as_such(tmp_path):
    with pytest.raises(UserError, match=f"sweep file {tmp_path} is a directory"):
        sweep_jobs(tmp_path)


# -- runaway grids --------------------------------------------------------------------------
MILLION = ("datasets: [toy]\nalgorithms: [ERM]\n"
           "grid: {lr: [%s], weight_decay: [%s], momentum: [%s]}\n"
           % ((", ".join(f"0.{i + 1:03d}" for i in range(100)),) * 3))


def test_a_million_job_grid_is_refused_at_once_with_its_count(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text(MILLION)
    t0 = time.perf_counter()
    line = one_line_error(capsys, "sweep", "launch", str(path), "--dry-run")
    assert time.perf_counter() - t0 < 1.0
    assert "expands to 1,000,000 jobs (more than 10,000)" in line and "--yes" in line


def test_count_matches_the_expansion_and_yes_accepts_a_big_sweep(tmp_path, monkeypatch):
    import domainbed_sc.sweep as sweep_module
    from domainbed_sc.sweep.spec import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text("datasets: [{name: toy, grid: {n_train: [64, 128]}}]\n"
                    "algorithms: [ERM, {name: DL, grid: {dl_lambda: [0.5, 1.0, 1.5]}, n_hparams: 2}]\n"
                    "grid: {lr: [0.1, 0.01]}\ntrial_seeds: [0, 1]\ndata_seeds: [3, 4, 5]\n")
    sweep = load_sweep(path)
    assert sweep.count() == len(sweep.runs()) == 2 * (2 + 3 * 2 * 2) * 2 * 3
    monkeypatch.setattr(sweep_module, "MAX_JOBS", 100)
    with pytest.raises(UserError, match="expands to 168 jobs .more than 100."):
        sweep_jobs(path, tmp_path / "out")
    assert len(sweep_jobs(path, tmp_path / "out", yes=True)[1]) == 168


# -- launcher options -----------------------------------------------------------------------
@pytest.mark.parametrize("workers", ["0", "-2"])
def test_parallel_workers_must_be_positive(tmp_path, capsys, workers):
    path = tmp_path / "s.yaml"
    path.write_text("datasets: [toy]\nalgorithms: [ERM]\nsteps: 2\n")
    line = one_line_error(capsys, "sweep", "launch", str(path), "--launcher", "parallel",
                          "--workers", workers, "--output-root", str(tmp_path / "out"))
    assert f"--workers must be at least 1, got {workers}" in line
    assert not (tmp_path / "out").exists()


def test_max_requeues_reaches_submitit(tmp_path, monkeypatch):
    import shutil

    from domainbed_sc.sweep.launchers import SlurmLauncher
    from domainbed_sc.sweep.spec import Resources

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    default = SlurmLauncher(Resources(), tmp_path).executor()
    assert default._executor.max_num_timeout == 100  # not submitit's 3
    parsed = Resources.parse({"max_requeues": 7}, "resources")
    assert SlurmLauncher(parsed, tmp_path).executor()._executor.max_num_timeout == 7
    with pytest.raises(UserError, match="max_requeues must be a positive integer"):
        Resources.parse({"max_requeues": -1}, "resources")
