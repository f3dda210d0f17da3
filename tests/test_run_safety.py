"""A run dir loses nothing, mixes nothing and executes nothing: one process per dir, one run per
dir, checkpoints without code, corrupt files set aside, divergence and full disks reported, no
leftovers (issue 12)."""
from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures_run import RunsCode, killed_after

from domainbed_sc import cache
from domainbed_sc.cli import main
from domainbed_sc.datasets.sources import mnist
from domainbed_sc.errors import UserError
from domainbed_sc.training.records import CHECKPOINT, DONE, RESULTS, RunArgs, read_records
from domainbed_sc.training.run_dir import DIVERGED, LOCK_FILE, RUN_FILE, RunDiverged
from domainbed_sc.training.trainer import RunOptions, train


def opts(out: Path, tmp_path: Path) -> RunOptions:
    return RunOptions(out, tmp_path / "data", "cpu", progress=False)


def train_cli(tmp_path: Path, out: Path, *extra: str) -> int:
    return main(["train", "--dataset", "toy", "--output-dir", str(out), "--data-dir",
                 str(tmp_path / "data"), "--device", "cpu", "--quiet", *extra])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("domainbed-sc: error: "), lines
    return lines[0]


def strict_records(path: Path) -> list[dict]:
    def no_constants(name):
        raise AssertionError(f"{name} in a record: not strict JSON")
    return [json.loads(line, parse_constant=no_constants) for line in path.read_text().splitlines()]


# -- 1 and 9: checkpoints ---------------------------------------------------------------------
def test_a_checkpoint_that_would_run_code_is_refused_and_set_aside(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"step": 8, "algorithm": RunsCode(tmp_path / "pwned")}, out / CHECKPOINT)
    assert train_cli(tmp_path, out, "--epochs", "1") == 2
    line = one_error_line(capsys)
    assert f"refusing checkpoint {out / CHECKPOINT}: it would run code" in line
    assert not (tmp_path / "pwned").exists()
    assert not (out / CHECKPOINT).exists() and len(list(out.glob(CHECKPOINT + ".corrupt-*"))) == 1


def damaged(blob: bytes, damage: str) -> bytes:
    if damage == "truncate":
        return blob[:len(blob) // 2]
    if damage == "random":
        return os.urandom(len(blob))
    mid = len(blob) // 2  # "inner": bytes inside the payload, which torch's zip reader would load
    return blob[:mid] + bytes(b ^ 0xFF for b in blob[mid:mid + 16]) + blob[mid + 16:]


@pytest.mark.parametrize("damage", ["truncate", "random", "inner"])
def test_a_corrupt_checkpoint_is_set_aside_and_the_run_restarts(tmp_path, capsys, damage):
    args = RunArgs("toy", epochs=3)
    ref = list(read_records(train(args, opts(tmp_path / "ref", tmp_path)) / RESULTS))
    out = tmp_path / "run"
    with killed_after(16):
        train(args, opts(out, tmp_path))
    blob = (out / CHECKPOINT).read_bytes()
    bad = damaged(blob, damage)
    (out / CHECKPOINT).write_bytes(bad)
    capsys.readouterr()
    train(args, opts(out, tmp_path))
    err = capsys.readouterr().err
    assert f"unreadable checkpoint {out / CHECKPOINT} (" in err and "restarting from scratch" in err
    aside = list(out.glob(CHECKPOINT + ".corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bad, "never deleted"
    strip = lambda recs: [{k: v for k, v in r.items() if k != "wall_time"} for r in recs]
    assert strip(read_records(out / RESULTS)) == strip(ref) and (out / DONE).exists()


def test_a_checkpoint_whose_record_was_lost_restarts_the_run(tmp_path, capsys):
    """results.jsonl lost its last line after the checkpoint was written: resuming would never
    write that step's record again, so the run starts over (and ends like an untouched one)."""
    args = RunArgs("toy", epochs=3)
    ref = list(read_records(train(args, opts(tmp_path / "ref", tmp_path)) / RESULTS))
    out = tmp_path / "run"
    with killed_after(16):
        train(args, opts(out, tmp_path))
    lines = (out / RESULTS).read_bytes().splitlines(keepends=True)
    (out / RESULTS).write_bytes(b"".join(lines[:-1]))
    capsys.readouterr()
    train(args, opts(out, tmp_path))
    assert f"results.jsonl has no record of checkpoint step 16" in capsys.readouterr().err
    strip = lambda recs: [{k: v for k, v in r.items() if k != "wall_time"} for r in recs]
    assert strip(read_records(out / RESULTS)) == strip(ref)


# -- 2: one process per run dir ---------------------------------------------------------------
def _train_cmd(out: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "domainbed_sc", "train", "--dataset", "toy", "--dataset-args",
            '{"n_train": 8192}', "--steps", "1200", "--checkpoint-freq", "80", "--output-dir", str(out),
            "--data-dir", str(data_dir), "--quiet", "--device", "cpu"]


def test_two_train_processes_on_one_dir_one_is_refused(tmp_path):
    """Started together; training (~6 s) outlasts the gap between their start-ups."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    procs = [subprocess.Popen(_train_cmd(out, tmp_path), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], errs
    winner, loser = sorted(range(2), key=lambda i: procs[i].returncode)
    lines = errs[loser].strip().splitlines()
    assert len(lines) == 1, errs[loser]
    assert f"is in use by process {procs[winner].pid} on host " in lines[0]
    steps = [r["step"] for r in read_records(out / RESULTS)]
    assert steps == list(range(80, 1201, 80)), "records of one run only, each step once"


# -- 3: one run per run dir -------------------------------------------------------------------
def test_a_dir_of_another_run_is_refused_not_resumed(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(tmp_path, out, "--steps", "8") == 0
    capsys.readouterr()
    identity = json.loads((out / RUN_FILE).read_text())
    assert identity["run_id"] == RunArgs("toy", steps=8).run_id()
    before = (out / RESULTS).read_bytes()
    assert train_cli(tmp_path, out, "--steps", "8", "--hparams", '{"lr": 0.01}') == 2
    assert f"{out} holds another run" in (line := one_error_line(capsys)) and "differs in hparams" in line
    assert train_cli(tmp_path, out, "--steps", "16", "--trial-seed", "3") == 2
    assert "differs in steps, trial_seed" in one_error_line(capsys)
    (out / RUN_FILE).unlink()  # a dir from before run.json: its records name the run
    assert train_cli(tmp_path, out, "--steps", "8", "--trial-seed", "1") == 2
    assert "differs in trial_seed" in one_error_line(capsys)
    assert (out / RESULTS).read_bytes() == before


# -- 4: run lengths ---------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--steps", "-5"], "steps must be a positive integer (got -5)"),
    (["--steps", "0"], "steps must be a positive integer (got 0)"),
    (["--epochs", "-1"], "epochs must be a positive number (got -1.0)"),
    (["--epochs", "0"], "epochs must be a positive number (got 0.0)"),
    (["--checkpoint-freq", "0"], "checkpoint_freq must be a positive integer (got 0)"),
    (["--checkpoint-freq", "-3"], "checkpoint_freq must be a positive integer (got -3)"),
])
def test_non_positive_lengths_are_refused(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert train_cli(tmp_path, out, *flags) == 2
    assert message in one_error_line(capsys)
    assert not out.exists(), "a refused run leaves no dir"
    field, value = flags[0][2:].replace("-", "_"), float(flags[1])
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunArgs("toy", **{field: int(value) if field != "epochs" else value})


# -- 5: divergence ----------------------------------------------------------------------------
def test_a_diverged_run_stops_with_a_marker_and_no_done(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(tmp_path, out, "--epochs", "3", "--hparams", '{"lr": 1e30}') == 2
    line = one_error_line(capsys)
    assert "training diverged: non-finite loss (loss=" in line and ") by step 8;" in line
    marker = json.loads((out / DIVERGED).read_text(), parse_constant=lambda c: pytest.fail(c))
    assert marker == {"step": 8, "losses": {"loss": None}}
    assert not (out / DONE).exists()
    assert not (out / RESULTS).exists(), "no record of a diverged interval"


def test_records_are_strict_json_and_old_nan_records_still_read(tmp_path):
    out = train(RunArgs("toy", epochs=1, dataset_args={"n_train": 64}), opts(tmp_path / "r", tmp_path))
    path = out / RESULTS
    rec = json.loads(path.read_text())
    rec["metrics"]["val"]["acc"] = float("nan")  # an undefined metric, as older versions wrote it
    path.write_text(json.dumps(rec) + "\n")
    assert "NaN" in path.read_text()
    assert [r["step"] for r in read_records(path)] == [rec["step"]]
    from domainbed_sc.training.records import truncate_records

    truncate_records(path, rec["step"])  # rewrites: strict from now on
    assert strict_records(path)[0]["metrics"]["val"]["acc"] is None


def test_a_retry_removes_the_stale_diverged_marker(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / DIVERGED).write_text('{"step": 8, "losses": {"loss": null}}')
    train(RunArgs("toy", epochs=1), opts(out, tmp_path))
    assert (out / DONE).exists() and not (out / DIVERGED).exists()


def test_a_diverged_sweep_job_fails_and_relaunch_retries_it(tmp_path, capsys):
    from domainbed_sc.sweep import sweep_jobs
    from domainbed_sc.sweep.jobs import read_state

    path = tmp_path / "sweep.yaml"
    path.write_text("datasets: [toy]\nalgorithms:\n  - name: ERM\n    grid: {lr: [0.001, 1e30]}\n"
                    "steps: 16\ncheckpoint_freq: 8\n")
    out = tmp_path / "out"
    argv = ["--output-root", str(out), "--device", "cpu", "--data-dir", str(tmp_path / "data")]
    assert main(["sweep", "launch", str(path), *argv]) == 2
    assert "1 ran, 1 failed" in capsys.readouterr().out
    _, jobs = sweep_jobs(path, out)
    bad = next(j for j in jobs if j.args.hparams["lr"] == 1e30)
    assert read_state(bad.dir).state == "failed" and "training diverged" in read_state(bad.dir).error
    assert (bad.dir / DIVERGED).exists() and not (bad.dir / DONE).exists()
    main(["sweep", "status", str(path), "--output-root", str(out)])
    assert "failed" in capsys.readouterr().out
    assert main(["sweep", "relaunch", str(path), "--failed", *argv]) == 2
    assert "0 ran, 1 failed" in capsys.readouterr().out
    assert json.loads((bad.dir / DIVERGED).read_text())["step"] == 8 and not (bad.dir / DONE).exists()


# -- 9: disks, output roots, MNIST archives ---------------------------------------------------
def test_an_unwritable_output_root_is_one_line(tmp_path, capsys):
    root = tmp_path / "a_file"
    root.write_text("")
    assert main(["train", "--dataset", "toy", "--epochs", "1", "--output-root", str(root),
                 "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--quiet"]) == 2
    assert f"cannot create run dir {root}/" in one_error_line(capsys)


@pytest.mark.parametrize("target", [RESULTS, CHECKPOINT])
def test_a_full_disk_names_the_file(tmp_path, capsys, monkeypatch, target):
    out = tmp_path / "run"
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith((target, f".{target}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert train_cli(tmp_path, out, "--epochs", "1") == 2
    assert one_error_line(capsys).endswith(f"no space left on device writing {out / target}")
    assert not list(out.glob(".*.tmp")), "no temp file left behind"


def test_a_truncated_mnist_archive_is_named(tmp_path, real_data_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (real_data_dir / "MNIST" / "raw").glob("*.gz"):
        shutil.copyfile(gz, raw / gz.name)
    bad = raw / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(UserError, match=f"corrupt MNIST archive {bad} .checksum mismatch"):
        mnist(tmp_path, train=True)
    with gzip.open(real_data_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz") as f:
        (raw / "train-labels-idx1-ubyte").write_bytes(f.read()[:500])  # a torn extraction
    for gz in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        os.symlink(real_data_dir / "MNIST" / "raw" / gz, raw / gz)
    with pytest.raises(UserError, match=f"cannot read MNIST from {raw}"):
        mnist(tmp_path, train=True)


# -- 11: leftovers ----------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [["--hparams", '{"lr": 0}'], ["--algorithm", "nope"],
                                   ["--dataset-args", '{"bogus": 1}'],
                                   ["--algorithm", "GroupDRO", "--hparams", '{"groupdro_mode": "env"}']])
def test_a_refused_run_leaves_no_dir(tmp_path, capsys, flags):
    out = tmp_path / "run"
    assert train_cli(tmp_path, out, "--epochs", "1", *flags) == 2
    one_error_line(capsys)
    assert not out.exists()


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = out / f".{CHECKPOINT}.99999999.tmp"  # above any pid_max: no such process
    alive = out / f".job.json.{os.getpid()}.tmp"  # e.g. a launcher writing its state right now
    other = out / ".notes.99999999.tmp"  # not a file of the run's
    for p in (dead, alive, other):
        p.write_bytes(b"partial")
    train(RunArgs("toy", epochs=1), opts(out, tmp_path))
    assert not dead.exists() and alive.exists() and other.exists()
    assert (out / LOCK_FILE).exists() and not list(out.glob(f".{CHECKPOINT}.*.tmp"))


def test_cache_writes_turn_a_full_disk_into_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", lambda obj, f: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(UserError, match=f"no space left on device writing {tmp_path / 'x.pt'}"):
        cache.atomic_torch_save({}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


# -- 13: requirement errors -------------------------------------------------------------------
def test_groupdro_env_mode_names_its_mode_in_the_requirement_error(tmp_path):
    from domainbed_sc.datasets import DATASETS

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DATASETS.get("toy"), "provides", frozenset({"s", "g"}))
        with pytest.raises(UserError, match=r"algorithm GroupDRO with groupdro_mode=env needs "
                                            r"environment labels \(e\), which dataset toy"):
            train(RunArgs("toy", "GroupDRO", hparams={"groupdro_mode": "env", "sampler": "random"}),
                  opts(tmp_path / "run", tmp_path))
        with pytest.raises(UserError, match=r"algorithm ERM with sampler uniform_env needs environment"):
            train(RunArgs("toy", hparams={"sampler": "uniform_env"}), opts(tmp_path / "run", tmp_path))
    assert not (tmp_path / "run").exists()


def test_the_packed_trainer_holds_its_dirs_like_train(tmp_path):
    from domainbed_sc.training.packed import train_packed

    members = [(RunArgs("toy", epochs=1, trial_seed=t), opts(tmp_path / f"t{t}", tmp_path)) for t in (0, 1)]
    train(RunArgs("toy", epochs=1, trial_seed=5), members[1][1])  # t1's dir holds another run
    with pytest.raises(UserError, match=f"{tmp_path / 't1'} holds another run"):
        train_packed(members)
    assert not (tmp_path / "t0" / RESULTS).exists()
    shutil.rmtree(tmp_path / "t1")
    (tmp_path / "t0" / CHECKPOINT).write_bytes(b"torn")
    dirs = train_packed(members)
    assert all((d / DONE).exists() for d in dirs) and list(dirs[0].glob(CHECKPOINT + ".corrupt-*"))
