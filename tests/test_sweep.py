"""Sweeps: YAML expansion and validation, job identity, claims, status, and the local / parallel /
dry launchers, on the toy dataset with a few steps per job (SLURM: test_sweep_slurm.py)."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_run import RunsCode

from domainbed_sc.cli import main
from domainbed_sc.errors import UserError
from domainbed_sc.sweep import JobEnv, sweep_jobs
from domainbed_sc.sweep import jobs as jobs_module
from domainbed_sc.sweep.jobs import (JobState, Outcome, is_claimed, read_state, run_job, try_claim,
                                     write_state)
from domainbed_sc.sweep.spec import load_sweep, parse_minutes, parse_sweep, validate
from domainbed_sc.sweep.launchers import select
from domainbed_sc.sweep.status import job_statuses
from domainbed_sc.training.records import CHECKPOINT, DONE, RESULTS, RunArgs, read_records

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("local_launcher_by_default")

TOY = """
datasets:
  - name: toy
    grid: {{n_train: [256, 512]}}
algorithms:
  - name: ERM
    grid: {{lr: [1e-3, 0.01]}}
trial_seeds: [1]
steps: {steps}
checkpoint_freq: {freq}
"""


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def toy_sweep(tmp_path: Path, steps: int = 20, freq: int = 10, **fmt) -> Path:
    return write(tmp_path, TOY.format(steps=steps, freq=freq, **fmt))


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def steps_of(job_dir: Path) -> list[int]:
    return [r["step"] for r in read_records(job_dir / RESULTS)]


def final_lines(job_dir: Path) -> int:
    """How many times the trainer finished this job (it logs "final step" once per finish)."""
    return (job_dir / "log.txt").read_text().count("final step")


# -- sweep files -----------------------------------------------------------------------------
def test_expansion_is_the_cartesian_product_with_grid_values():
    sweep = parse_sweep({
        "datasets": [{"name": "toy", "dataset_args": {"noise": 0.5}, "grid": {"n_train": [256, 512]},
                      "hparams": {"lr": 0.002}}],
        "algorithms": ["ERM", {"name": "ERM", "grid": {"weight_decay": [0.0, 0.1, 0.2]}, "n_hparams": 1}],
        "hparams": {"batch_size": 32, "lr": 0.001},
        "n_hparams": 2, "trial_seeds": [42, 8, 777], "data_seeds": "trial", "steps": 5,
    }, "s")
    runs = sweep.runs()
    # first ERM: 2 N × 2 draws × 3 seeds = 12; second: 2 N × 3 wd × 1 draw × 3 seeds = 18
    assert len(runs) == 30 and len({r.run_id() for r in runs}) == 30
    assert {r.dataset_args["n_train"] for r in runs} == {256, 512}
    assert all(r.dataset_args["noise"] == 0.5 for r in runs)
    assert {r.hparams.get("weight_decay") for r in runs} == {None, 0.0, 0.1, 0.2}
    assert all(r.hparams["lr"] == 0.002 and r.hparams["batch_size"] == 32 for r in runs)  # dataset > global
    assert {r.hparams_seed for r in runs if "weight_decay" not in r.hparams} == {0, 1}
    assert {r.hparams_seed for r in runs if "weight_decay" in r.hparams} == {0}
    assert all(r.data_seed == r.trial_seed for r in runs) and {r.trial_seed for r in runs} == {42, 8, 777}
    assert all(r.steps == 5 and r.epochs is None for r in runs)


def test_data_seed_list_crosses_trial_seeds_and_grids_override_fixed_values():
    sweep = parse_sweep({"datasets": ["toy"], "algorithms": [{"name": "ERM", "hparams": {"lr": 0.5},
                                                              "grid": {"lr": [0.1, 0.2]}}],
                         "grid": {"lr": [9.0], "batch_size": [8, 16]},
                         "trial_seeds": [0, 1], "data_seeds": [5, 6, 7]}, "s")
    runs = sweep.runs()
    assert len(runs) == 2 * 2 * 2 * 3  # lr (algorithm grid wins) × batch × trial × data
    assert {r.hparams["lr"] for r in runs} == {0.1, 0.2}
    assert {(r.trial_seed, r.data_seed) for r in runs} == {(t, d) for t in (0, 1) for d in (5, 6, 7)}


def test_duplicate_jobs_are_dropped():
    sweep = parse_sweep({"datasets": ["toy", "toy"], "algorithms": ["ERM"], "trial_seeds": [0, 0]}, "s")
    assert len(sweep.runs()) == 1


def test_yaml_reads_inf_and_exponents_without_a_dot(tmp_path):
    sweep = load_sweep(write(tmp_path, "datasets: [toy]\nalgorithms: [ERM]\n"
                                       "grid: {lr: [5e-3, 1.0e-4], momentum: [.inf]}\n"))
    assert sorted(r.hparams["lr"] for r in sweep.runs()) == [1e-4, 5e-3]
    assert sweep.runs()[0].hparams["momentum"] == float("inf")


@pytest.mark.parametrize("text, key", [
    ("datasets: [toy]\nalgorithms: [ERM]\ntrial_seed: [1]\n", "trial_seed"),
    ("datasets: [{name: toy, grids: {n_train: [8]}}]\nalgorithms: [ERM]\n", "grids"),
    ("datasets: [toy]\nalgorithms: [{name: ERM, hparam: {lr: 0.1}}]\n", "hparam"),
    ("datasets: [toy]\nalgorithms: [ERM]\nresources: {gpu: 1}\n", "gpu"),
])
def test_unknown_key_is_an_error_naming_it(tmp_path, text, key):
    with pytest.raises(UserError, match=rf"unknown key '{key}'"):
        load_sweep(write(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ("datasets: [toy]\nalgorithms: [NoSuchAlgorithm]\n", "unknown algorithm 'NoSuchAlgorithm'"),
    ("datasets: [nosuchdata]\nalgorithms: [ERM]\n", "unknown dataset 'nosuchdata'"),
    ("datasets: [toy]\nalgorithms: [ERM]\nhparams: {lrr: 0.1}\n", "unknown hyperparameter.*lrr"),
    ("datasets: [toy]\nalgorithms: [ERM]\ngrid: {lr: [0.1, -1.0]}\n", "invalid value.*lr: -1.0"),
    ("datasets: [toy]\nalgorithms: [ERM]\nhparams: {lr: fast}\n", "lr='fast' has the wrong type"),
    ("datasets: [{name: toy, grid: {n_trian: [8]}}]\nalgorithms: [ERM]\n", "unknown dataset argument.*n_trian"),
    ("datasets: [mnist_cifar]\nalgorithms: [ERM]\nhparams: {sampler: uniform_env}\n",
     "needs environment labels"),
    ("datasets: [toy]\nalgorithms: [ERM]\nsteps: 5\nepochs: 1\n", "steps or epochs, not both"),
    ("datasets: [toy]\nalgorithms: [ERM]\ntrial_seeds: 3\n", "trial_seeds must be a list"),
])
def test_names_and_values_are_validated_before_anything_runs(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message):
        validate(load_sweep(path).runs())
    assert cli("sweep", "launch", path, "--output-root", tmp_path / "out") == 2
    assert not (tmp_path / "out").exists()


def test_cli_error_for_a_bad_sweep_is_one_line(tmp_path, capsys):
    path = write(tmp_path, "datasets: [toy]\nalgorithms: [ERM]\nseeds: [1]\n")
    assert cli("sweep", "status", path) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "unknown key 'seeds'" in err and str(path) in err


def test_parse_minutes():
    assert [parse_minutes(v) for v in (30, "45", "90:30", "2:00:00", "1-00", "1-2:30", "0-0:0:1")] == \
        [30, 45, 91, 120, 1440, 1590, 1]
    with pytest.raises(UserError, match="resources.time"):
        parse_minutes("two hours")


def test_every_shipped_sweep_file_expands_and_validates():
    """Full validation: this fails until every algorithm and dataset the files name exists."""
    files = sorted((REPO / "sweeps").glob("*.yaml"))
    assert {f.stem for f in files} >= {"dl_mnist_cifar", "rcl_mnist_mp", "domainbed_cmnist", "ex2l_cmnist",
                                       "ex2l_cmnist_cpu",
                                       "chroma_vae_cmnist", "waterbirds", "spawrious", "quickstart"}
    for path in files:
        header = path.read_text().split("\n\n")[0]
        assert header.startswith("#"), f"{path.name} must start with a comment"
        stated = re.search(r"(\d+) jobs", header)
        _, jobs = sweep_jobs(path, "/tmp/unused")
        assert stated and int(stated.group(1)) == len(jobs), f"{path.name}: header says {stated}"


UNIFORM_ENV = dict.fromkeys(["IRM", "DANN", "CDAN", "CORAL", "MMD"], ("uniform_env", None))
EX2L_PROTOCOL = {"ERM": ("random", None), "GroupDRO": ("uniform_group", "group"),
                 "eX2L": ("uniform_group", None), **UNIFORM_ENV}


@pytest.mark.parametrize("stem, backbone, protocol", [
    # DomainBed: every algorithm, ERM included, on one minibatch per environment
    ("domainbed_cmnist", ("mnist_cnn", 0), {"ERM": ("uniform_env", None), "IRM": ("uniform_env", None),
                                            "GroupDRO": ("uniform_env", "env"), "DANN": ("uniform_env", None)}),
    ("ex2l_cmnist", ("resnet50", 224), EX2L_PROTOCOL),  # METHODS §C.13: upsampled for ResNet-50
    ("ex2l_cmnist_cpu", ("mnist_cnn", 0), EX2L_PROTOCOL),
])
def test_cmnist_sweeps_sample_as_their_papers_did(stem, backbone, protocol):
    from domainbed_sc.datasets import DATASETS
    from domainbed_sc.algorithms.resolve import resolve_hparams

    seen: dict[str, set] = {}
    for args in load_sweep(REPO / "sweeps" / f"{stem}.yaml").runs():
        _, hp = resolve_hparams(args, DATASETS.get(args.dataset))
        mode = hp["groupdro_mode"] if args.algorithm == "GroupDRO" else None
        seen.setdefault(args.algorithm, set()).add((hp["sampler"], mode, hp["arch"], hp["input_resize"]))
    assert seen == {name: {(*how, *backbone)} for name, how in protocol.items()}


SHIPPED_SELECTION = {  # each paper's own model selection (docs/METHODS.md §P.4, §A.5, §A.9)
    "dl_mnist_cifar": ["last"], "quickstart": ["last"], "rcl_mnist_mp": ["best_val_acc", "early_stop_val_acc"],
    "domainbed_cmnist": ["training_domain_val", "oracle"], "chroma_vae_cmnist": ["best_val_acc"],
    "waterbirds": ["best_val_wga", "best_val_mean_aa_wga"], "spawrious": ["best_val_mean_aa_wga"],
    "ex2l_cmnist": ["best_val_mean_aa_wga"], "ex2l_cmnist_cpu": ["best_val_mean_aa_wga"]}
SHIPPED_PATIENCE = {"ex2l_cmnist": 10, "ex2l_cmnist_cpu": 10, "spawrious": 10}  # eX2L's, in epochs


def test_every_shipped_sweep_file_names_its_papers_selection():
    for name, expected in SHIPPED_SELECTION.items():
        sweep = load_sweep(REPO / "sweeps" / f"{name}.yaml")
        assert sweep.selection == expected and sweep.patience == SHIPPED_PATIENCE.get(name), name


@pytest.mark.parametrize("value, expected", [
    ("best_val_acc", ["best_val_acc"]), ("[last, oracle]", ["last", "oracle"]),
    ("early_stop_val_acc@0.9", ["early_stop_val_acc@0.9"]), ("last,oracle", ["last", "oracle"])])
def test_selection_key_names_known_methods(tmp_path, value, expected):
    path = write(tmp_path, f"selection: {value}\ndatasets: [toy]\nalgorithms: [ERM]\n")
    assert load_sweep(path).selection == expected


@pytest.mark.parametrize("value, message", [
    ("best_val_accc", "selection: unknown selection method.*best_val_accc; known: last"),
    ("{a: 1}", "selection must be a method name or a list"), ("[]", "selection must be")])
def test_selection_key_rejects_unknown_methods(tmp_path, value, message):
    path = write(tmp_path, f"selection: {value}\ndatasets: [toy]\nalgorithms: [ERM]\n")
    with pytest.raises(UserError, match=message):
        load_sweep(path)


def test_collect_replays_the_patience_a_sweep_file_names(tmp_path, capsys):
    """eX2L's protocol: `patience:` in the sweep file is collect's early stopping without
    --patience, exactly as if --patience were given; a sweep naming none gets none."""
    out = tmp_path / "out"
    for name, extra in (("stops", "patience: 1\n"), ("free", "")):
        path = write(tmp_path, f"selection: best_val_acc\n{extra}datasets: [toy]\nalgorithms: [ERM]\n"
                               "epochs: 4\ncheckpoint_freq: 2\n", f"{name}.yaml")
        assert cli("sweep", "launch", path, "--output-root", out / name, "--device", "cpu") == 0
    assert json.loads((out / "stops" / ".sweeps" / "stops.json").read_text())["patience"] == 1
    capsys.readouterr()
    assert cli("collect", out / "stops", "--metric", "ood_acc") == 0
    from_sweep = capsys.readouterr().out
    assert "Early stopping replayed" in from_sweep
    assert cli("collect", out / "stops", "--metric", "ood_acc", "--patience", "1",
               "--selection", "best_val_acc") == 0
    given = capsys.readouterr().out
    table = lambda text: [ln for ln in text.splitlines() if ln.startswith("| ERM")]
    assert table(from_sweep) == table(given)
    assert cli("collect", out / "free", "--metric", "ood_acc") == 0
    assert "Early stopping replayed" not in capsys.readouterr().out


def test_collect_uses_each_sweeps_selection_for_its_own_runs(tmp_path, capsys):
    """Two sweeps in one output root, naming different selections; no --selection."""
    out = tmp_path / "out"
    for name, selection, lr in (("a", "best_val_wga", 0.001), ("b", "[last, oracle]", 0.01)):
        path = write(tmp_path, f"selection: {selection}\ndatasets: [toy]\nalgorithms: [ERM]\n"
                               f"hparams: {{lr: {lr}}}\nsteps: 2\ncheckpoint_freq: 1\n", f"{name}.yaml")
        assert cli("sweep", "launch", path, "--output-root", out, "--device", "cpu") == 0
    assert json.loads((out / ".sweeps" / "a.json").read_text())["selection"] == ["best_val_wga"]
    capsys.readouterr()
    assert cli("collect", out, "--metric", "ood_acc") == 0
    text = capsys.readouterr().out
    headings = re.findall(r"^# Selection: (\S+)", text, re.M)
    assert headings == ["best_val_wga", "last", "oracle"]
    sections = text.split("# Selection: ")[1:]
    assert all(sec.count("| ERM") == 1 for sec in sections)  # each over its own sweep's run
    assert "Selection: each sweep file's own" in text
    assert cli("collect", out, "--selection", "last", "--metric", "ood_acc") == 0
    text = capsys.readouterr().out
    assert re.findall(r"^# Selection: (\S+)", text, re.M) == ["last"]
    assert text.split("# Selection: ")[1].count("| ERM") == 2  # both sweeps' runs


# -- job identity ----------------------------------------------------------------------------
def test_job_dirs_are_stable_and_independent_of_paths(tmp_path):
    path = toy_sweep(tmp_path)
    _, a = sweep_jobs(path, tmp_path / "a")
    _, b = sweep_jobs(path, tmp_path / "elsewhere" / "b")
    assert [j.name for j in a] == [j.name for j in b] == [j.args.dir_name() for j in a]
    assert all(j.dir.parent == (tmp_path / "a").resolve() for j in a)
    code = ("import sys; from domainbed_sc.sweep import sweep_jobs; "
            "print('\\n'.join(j.name for j in sweep_jobs(sys.argv[1], sys.argv[2])[1]))")
    names = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "c")], check=True,
                           capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert names.stdout.split() == [j.name for j in a]


def test_data_dir_and_device_do_not_change_the_job(tmp_path):
    path = toy_sweep(tmp_path)
    assert cli("sweep", "launch", path, "--output-root", tmp_path / "out", "--data-dir", tmp_path / "d1",
               "--device", "cpu") == 0
    _, jobs = sweep_jobs(path, tmp_path / "out")
    done = {j.dir: (j.dir / DONE).stat().st_mtime_ns for j in jobs}
    assert cli("sweep", "launch", path, "--output-root", tmp_path / "out", "--data-dir", tmp_path / "d2") == 0
    assert {j.dir: (j.dir / DONE).stat().st_mtime_ns for j in jobs} == done


# -- local launcher, status ------------------------------------------------------------------
def test_launch_runs_everything_once_and_again_runs_nothing(tmp_path, capsys):
    path = toy_sweep(tmp_path)
    out = tmp_path / "out"
    assert cli("sweep", "launch", path, "--output-root", out, "--device", "cpu") == 0
    assert "launch: 4 ran, 0 failed" in capsys.readouterr().out
    _, jobs = sweep_jobs(path, out)
    assert all(steps_of(j.dir) == [10, 20] for j in jobs)
    before = {j.dir: ((j.dir / DONE).stat().st_mtime_ns, (j.dir / RESULTS).read_bytes()) for j in jobs}
    assert all(read_state(j.dir).state == "done" and read_state(j.dir).launcher == "local" for j in jobs)

    assert cli("sweep", "launch", path, "--output-root", out) == 0
    assert "skipping: 4 done" in capsys.readouterr().out
    assert {j.dir: ((j.dir / DONE).stat().st_mtime_ns, (j.dir / RESULTS).read_bytes()) for j in jobs} == before

    assert cli("sweep", "status", path, "--output-root", out) == 0
    text = capsys.readouterr().out
    assert text.startswith("4 jobs: done 4")
    assert all(re.search(rf"{j.name}\s+done\s+20/20", text) for j in jobs)


def test_failing_job_is_reported_and_succeeds_after_relaunch(tmp_path, capsys, monkeypatch):
    path = toy_sweep(tmp_path)
    out = tmp_path / "out"
    _, jobs = sweep_jobs(path, out)
    bad = jobs[1]
    real_train = jobs_module.train

    def flaky_train(args, opts):  # a crash in one job, e.g. a bug hit by one configuration
        if args == bad.args:
            raise RuntimeError("CUDA out of memory\nTried to allocate 2.00 GiB")
        return real_train(args, opts)

    monkeypatch.setattr(jobs_module, "train", flaky_train)
    assert cli("sweep", "launch", path, "--output-root", out, "--device", "cpu") == 2
    captured = capsys.readouterr()
    assert "3 ran, 1 failed" in captured.out and "1 job(s) failed" in captured.err
    statuses = {s.job.dir: s for s in job_statuses(jobs)}
    assert statuses[bad.dir].state == "failed"
    assert statuses[bad.dir].error == "Tried to allocate 2.00 GiB"  # the error's last line
    assert "RuntimeError: CUDA out of memory" in (bad.dir / "error.txt").read_text()
    assert sum(s.state == "done" for s in statuses.values()) == 3
    cli("sweep", "status", path, "--output-root", out)
    assert re.search(rf"{bad.name}\s+failed\s+.*Tried to allocate 2.00 GiB", capsys.readouterr().out)

    done_before = {j.dir: (j.dir / DONE).stat().st_mtime_ns for j in jobs if j != bad}
    monkeypatch.setattr(jobs_module, "train", real_train)  # "fixed"
    assert cli("sweep", "relaunch", path, "--failed", "--output-root", out, "--device", "cpu") == 0
    assert "1 ran, 0 failed" in capsys.readouterr().out
    assert all(s.state == "done" for s in job_statuses(jobs))
    assert {j.dir: (j.dir / DONE).stat().st_mtime_ns for j in jobs if j != bad} == done_before
    assert steps_of(bad.dir) == [10, 20]


def test_relaunch_failed_leaves_unlaunched_jobs_alone(tmp_path, capsys):
    path = toy_sweep(tmp_path)
    out = tmp_path / "out"
    _, jobs = sweep_jobs(path, out)
    write_state(jobs[0].dir, JobState("failed", "local", error="boom"))
    assert cli("sweep", "relaunch", path, "--failed", "--output-root", out, "--device", "cpu") == 0
    assert "1 ran" in capsys.readouterr().out
    assert [(j.dir / DONE).exists() for j in jobs] == [True] + [False] * 3
    with pytest.raises(SystemExit):  # relaunch without --failed is a usage error
        cli("sweep", "relaunch", path, "--output-root", out)


def test_status_states(tmp_path):
    path = write(tmp_path, "datasets: [toy]\nalgorithms: [ERM]\ntrial_seeds: [0, 1, 2, 3, 4, 5]\n"
                           "epochs: 2\n")
    _, jobs = sweep_jobs(path, tmp_path / "out")
    env = JobEnv(tmp_path / "data", "cpu")
    assert run_job(jobs[0], env, "local") is Outcome.RAN
    write_state(jobs[1].dir, JobState("failed", "local", error="ValueError: bad"))
    write_state(jobs[2].dir, JobState("running", "local"))  # its process died: no claim held
    write_state(jobs[3].dir, JobState("queued", "parallel"))  # queued by this live process
    claim = try_claim(jobs[4].dir)
    try:
        statuses = job_statuses(jobs)
    finally:
        claim.release()
    got = [(s.state, s.error, s.progress) for s in statuses]
    assert got[0] == ("done", None, "16/16")  # 512 examples / batch 64 × 2 epochs
    assert got[1] == ("failed", "ValueError: bad", "")
    assert got[2] == ("interrupted (resumable)", "the process running it ended before the job finished", "")
    assert [j.dir for j in select(statuses, failed_only=True)] == [jobs[1].dir, jobs[2].dir]
    assert got[3:] == [("queued", None, ""), ("running", None, ""), ("not launched", None, "")]
    write_state(jobs[3].dir, JobState("queued", "parallel", pid=_dead_pid()))
    assert job_statuses([jobs[3]])[0].state == "not launched"  # its launcher died before it started


@pytest.mark.parametrize("sacct, age, state, error", [
    ("PENDING", 0, "queued", None),
    ("REQUEUED", 0, "queued", None),
    ("RUNNING", 0, "running", None),
    ("TIMEOUT", 0, "interrupted (resumable)", "SLURM job 7_1 ended TIMEOUT without finishing (log: "),
    ("NODE_FAIL", 0, "interrupted (resumable)", "SLURM job 7_1 ended NODE_FAIL without finishing"),
    ("OUT_OF_MEMORY", 0, "failed", "SLURM job 7_1 ended OUT_OF_MEMORY without finishing"),
    ("COMPLETED", 0, "failed", "SLURM job 7_1 ended COMPLETED without finishing"),  # but no done
    ("MISSING", 5, "queued", None),  # sacct has not caught up with a fresh submission
    ("MISSING", 3600, "failed", "SLURM has no record of job 7_1"),
    (None, 0, "queued", None),  # no sacct here: the record stands
])
def test_slurm_job_state_follows_sacct(tmp_path, sacct, age, state, error):
    from domainbed_sc.sweep.status import job_state
    [job] = sweep_jobs(write(tmp_path, "datasets: [toy]\nalgorithms: [ERM]\n"), tmp_path / "out")[1]
    recorded = JobState("queued", "slurm", "7_1", time=time.time() - age)
    got_state, got_error = job_state(job, recorded, {} if sacct is None else {"7_1": sacct})
    assert got_state == state
    assert got_error == error or (error and got_error.startswith(error))
    if sacct == "TIMEOUT":
        assert got_error.endswith("/.submitit/7_1_0_log.err)")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- claims ----------------------------------------------------------------------------------
def test_a_claimed_job_is_skipped_not_run(tmp_path):
    path = toy_sweep(tmp_path)
    _, jobs = sweep_jobs(path, tmp_path / "out")
    claim = try_claim(jobs[0].dir)
    assert claim is not None and try_claim(jobs[0].dir, attempts=1) is None and is_claimed(jobs[0].dir)
    assert run_job(jobs[0], JobEnv(tmp_path, "cpu"), "local") is Outcome.CLAIMED
    assert not (jobs[0].dir / RESULTS).exists()
    claim.release()
    assert not is_claimed(jobs[0].dir)
    assert run_job(jobs[0], JobEnv(tmp_path, "cpu"), "local") is Outcome.RAN
    assert run_job(jobs[0], JobEnv(tmp_path, "cpu"), "local") is Outcome.DONE


def test_the_claim_dies_with_its_process(tmp_path):
    job_dir = tmp_path / "job"
    code = ("import sys, time; from pathlib import Path; from domainbed_sc.sweep.jobs import try_claim; "
            "c = try_claim(Path(sys.argv[1])); print(c is not None, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(job_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "True"
        assert is_claimed(job_dir)
    finally:
        proc.kill()
        proc.wait()
    assert not is_claimed(job_dir)


def _launch_cmd(path: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "domainbed_sc", "sweep", "launch", str(path), "--output-root", str(out),
            "--device", "cpu", "--launcher", "local", *extra]


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # two launchers on two cores: no oversubscription


SLOW_TOY = """
datasets: [toy]
algorithms: [ERM]
trial_seeds: {seeds}
steps: {steps}
checkpoint_freq: 10
"""


def test_killed_sweep_resumes_and_every_job_finishes_once(tmp_path):
    path = write(tmp_path, SLOW_TOY.format(seeds=[0, 1, 2], steps=100))
    out = tmp_path / "out"
    _, jobs = sweep_jobs(path, out)
    proc = subprocess.Popen(_launch_cmd(path, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=ONE_THREAD)
    deadline = time.time() + 120
    while not ((jobs[0].dir / DONE).exists() and (jobs[1].dir / CHECKPOINT).exists()) \
            and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (jobs[0].dir / DONE).exists() and not (jobs[1].dir / DONE).exists(), "kill must land in job 2"
    first_done = (jobs[0].dir / DONE).stat().st_mtime_ns
    states = [s.state for s in job_statuses(jobs)]
    assert states == ["done", "interrupted (resumable)", "not launched"]

    subprocess.run(_launch_cmd(path, out), check=True, capture_output=True, env=ONE_THREAD)
    assert all((j.dir / DONE).exists() for j in jobs)
    assert (jobs[0].dir / DONE).stat().st_mtime_ns == first_done
    assert "resumed from step" in (jobs[1].dir / "log.txt").read_text()
    for job in jobs:
        assert steps_of(job.dir) == list(range(10, 101, 10))
        assert final_lines(job.dir) == 1


def test_two_concurrent_launches_never_run_a_job_twice(tmp_path):
    path = write(tmp_path, SLOW_TOY.format(seeds=[0, 1, 2, 3], steps=50))
    out = tmp_path / "out"
    _, jobs = sweep_jobs(path, out)
    procs = [subprocess.Popen(_launch_cmd(path, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ONE_THREAD) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ran = sum(int(m.group(1)) for o in outputs for m in re.finditer(r"launch: (\d+) ran", o))
    assert ran == len(jobs), outputs
    for job in jobs:
        log = (job.dir / "log.txt").read_text()
        assert final_lines(job.dir) == 1 and "resumed" not in log  # one uninterrupted run each
        assert steps_of(job.dir) == list(range(10, 51, 10))


# -- parallel and dry ------------------------------------------------------------------------
def test_parallel_launcher_restarts_a_corrupt_checkpoint_and_fails_an_unsafe_one(tmp_path, capsys):
    import torch

    path = toy_sweep(tmp_path)
    out = tmp_path / "out"
    _, jobs = sweep_jobs(path, out)
    corrupt, unsafe = jobs[2], jobs[3]
    for job in (corrupt, unsafe):
        job.dir.mkdir(parents=True)
    (corrupt.dir / CHECKPOINT).write_bytes(b"not a checkpoint")
    torch.save({"step": 10, "evil": RunsCode(tmp_path / "pwned")}, unsafe.dir / CHECKPOINT)
    assert cli("sweep", "launch", path, "--output-root", out, "--launcher", "parallel", "--workers", "2",
               "--device", "cpu") == 2
    captured = capsys.readouterr()
    assert "3 ran, 1 failed" in captured.out
    log = (corrupt.dir / "log.txt").read_text()  # (the workers' stderr is not captured)
    assert f"unreadable checkpoint {corrupt.dir / CHECKPOINT} (Unsupported operand" in log
    assert not (tmp_path / "pwned").exists(), "loading a checkpoint must never run its code"
    statuses = job_statuses(jobs)
    assert [s.state for s in statuses] == ["done", "done", "done", "failed"]
    assert steps_of(corrupt.dir) == [10, 20] and len(list(corrupt.dir.glob(CHECKPOINT + ".corrupt-*"))) == 1
    assert "refusing checkpoint" in statuses[3].error and read_state(unsafe.dir).launcher == "parallel"
    assert list(unsafe.dir.glob(CHECKPOINT + ".corrupt-*")), "the unsafe checkpoint is kept aside"

    assert cli("sweep", "relaunch", path, "--failed", "--output-root", out, "--launcher", "parallel",
               "--workers", "2", "--device", "cpu") == 0
    assert "1 ran, 0 failed" in capsys.readouterr().out
    assert all(s.state == "done" for s in job_statuses(jobs)) and steps_of(unsafe.dir) == [10, 20]
    assert not (tmp_path / "pwned").exists()


def test_dry_run_prints_train_commands_that_reproduce_the_jobs(tmp_path, capsys):
    path = toy_sweep(tmp_path)
    out = tmp_path / "out"
    assert cli("sweep", "launch", path, "--output-root", out, "--dry-run") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("domainbed-sc train")]
    assert len(lines) == 4 and not out.exists()
    argv = shlex.split(lines[3])[1:] + ["--quiet"]
    argv[argv.index("--device") + 1] = "cpu"
    assert main(argv) == 0
    _, jobs = sweep_jobs(path, out)
    assert steps_of(jobs[3].dir) == [10, 20]
    assert cli("sweep", "launch", path, "--output-root", out, "--device", "cpu") == 0
    assert "3 ran" in capsys.readouterr().out  # the hand-run job is the sweep's own job


def test_a_hand_run_epochs_command_records_the_sweep_jobs_own_id(tmp_path, capsys):
    """`train --epochs 1` parses a float, the sweep file's `epochs: 1` an int; both must be one
    run (one id), or collect splits the hand-run job from its sweep cell."""
    assert RunArgs("toy", epochs=3.0).run_id() == RunArgs("toy", epochs=3).run_id()
    path = write(tmp_path, "datasets: [toy]\nalgorithms: [ERM]\ntrial_seeds: [0]\nepochs: 1\n")
    out = tmp_path / "out"
    assert cli("sweep", "launch", path, "--output-root", out, "--dry-run") == 0
    [line] = [l for l in capsys.readouterr().out.splitlines() if l.startswith("domainbed-sc train")]
    argv = shlex.split(line)[1:] + ["--quiet"]
    argv[argv.index("--device") + 1] = "cpu"
    assert main(argv) == 0
    [job] = sweep_jobs(path, out)[1]
    records = list(read_records(job.dir / RESULTS))
    assert records and all(RunArgs(**r["args"]).run_id() == job.args.run_id() for r in records)


def test_hparams_per_trial_key_reaches_every_job_and_defaults_off(tmp_path):
    base = "datasets: [toy]\nalgorithms: [ERM]\nn_hparams: 2\ntrial_seeds: [0, 1]\n"
    off = load_sweep(write(tmp_path, base, "off.yaml")).runs()
    on = load_sweep(write(tmp_path, base + "hparams_per_trial: true\n", "on.yaml")).runs()
    assert len(on) == len(off) == 4
    assert all(r.hparams_per_trial for r in on) and not any(r.hparams_per_trial for r in off)
    assert {r.run_id() for r in on}.isdisjoint({r.run_id() for r in off})
    with pytest.raises(UserError, match="hparams_per_trial must be true or false"):
        load_sweep(write(tmp_path, base + "hparams_per_trial: per_trial\n", "bad.yaml"))


def test_only_the_domainbed_sweep_searches_per_trial():
    """DomainBed's protocol draws hparams per trial seed; the other papers' sweeps share draws."""
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        runs = load_sweep(path).runs()
        assert {r.hparams_per_trial for r in runs} == {path.stem == "domainbed_cmnist"}, path.name


def test_dry_run_command_keeps_the_per_trial_search(tmp_path, capsys):
    path = write(tmp_path, TOY.format(steps=10, freq=10) + "n_hparams: 2\nhparams_per_trial: true\n")
    out = tmp_path / "out"
    assert cli("sweep", "launch", path, "--output-root", out, "--dry-run") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("domainbed-sc train")]
    assert len(lines) == 8 and all("--hparams-per-trial" in line for line in lines)
    argv = shlex.split(lines[-1])[1:] + ["--quiet"]
    argv[argv.index("--device") + 1] = "cpu"
    assert main(argv) == 0
    _, jobs = sweep_jobs(path, out)
    [record] = read_records(jobs[-1].dir / RESULTS)
    assert record["args"] == jobs[-1].args.as_dict() and record["args"]["hparams_per_trial"] is True


@pytest.mark.real_data
def test_real_data_sweep_on_mnist_cifar(tmp_path, real_data_dir):
    path = write(tmp_path, "datasets: [{name: mnist_cifar, dataset_args: {n_backgrounds: 1}}]\n"
                           "algorithms: [ERM, {name: DL, hparams: {dl_lambda: 1.25}}]\n"
                           "trial_seeds: [13]\ndata_seeds: trial\nsteps: 10\n")
    out = tmp_path / "out"
    assert cli("sweep", "launch", path, "--output-root", out, "--data-dir", real_data_dir,
               "--device", "cpu") == 0
    _, jobs = sweep_jobs(path, out)
    assert [j.args.algorithm for j in jobs] == ["ERM", "DL"]
    for job in jobs:
        [record] = read_records(job.dir / RESULTS)
        assert record["step"] == 10 and record["args"]["data_seed"] == 13
        assert set(record["metrics"]) >= {"train", "test_id", "test_ood"}
        assert record["dataset"]["num_attributes"] == 10  # 10 classes x N = 1 background
