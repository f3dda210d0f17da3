"""What a checkpoint evaluates (issue 15): record-read splits in full, the rest on a fixed
subsample; the evaluation batch per backbone and device, an explicit value winning."""
from __future__ import annotations

import pytest
import torch

from domainbed_sc.cli import main
from domainbed_sc.collect.reader import ROLES, role_split
from domainbed_sc.datasets import DATASETS, load_dataset
from domainbed_sc.errors import UserError
from domainbed_sc.sweep import JobEnv
from domainbed_sc.sweep.jobs import Job
from domainbed_sc.sweep.launchers import train_command
from domainbed_sc.training import eval_batch
from domainbed_sc.training.evaluation import SUBSAMPLE_MAX, reported_splits, subsample_indices
from domainbed_sc.training.records import RESULTS, RunArgs, read_records
from domainbed_sc.training.trainer import Run, RunOptions, train

BIG_TOY = {"n_train": 8192}  # more training examples than the subsample takes


def toy_records(tmp_path, name, **opts):
    args = RunArgs("toy", dataset_args=BIG_TOY, steps=60, checkpoint_freq=20)
    out = train(args, RunOptions(tmp_path / name, tmp_path, "cpu", progress=False, **opts))
    return list(read_records(out / RESULTS))


def test_reported_splits_in_full_and_identical_train_on_a_flagged_subsample(tmp_path):
    full = toy_records(tmp_path, "full", eval_train="full")
    new = toy_records(tmp_path, "new")
    assert len(full) == len(new) == 3
    for a, b in zip(full, new):
        assert a["losses"] == b["losses"]  # evaluating less draws no random numbers
        for split in ("val", "test"):
            assert a["metrics"][split] == b["metrics"][split]
        assert a["metrics"]["train"]["n"] == 8192 and "subsample" not in a["metrics"]["train"]
        assert b["metrics"]["train"]["n"] == SUBSAMPLE_MAX and b["metrics"]["train"]["subsample"]
    assert abs(new[-1]["metrics"]["train"]["acc"] - full[-1]["metrics"]["train"]["acc"]) < 0.03


def test_subsample_is_fixed_by_data_and_split_only(tmp_path):
    ds = load_dataset("toy", BIG_TOY, 0, tmp_path)
    first = subsample_indices(ds, "train", "subsample")
    assert torch.equal(first, subsample_indices(ds, "train", "subsample"))
    assert len(first.unique()) == SUBSAMPLE_MAX and torch.equal(first, first.sort().values)
    other = subsample_indices(load_dataset("toy", BIG_TOY, 1, tmp_path), "train", "subsample")
    assert not torch.equal(first, other)
    assert subsample_indices(ds, "train", "full") is None
    assert subsample_indices(load_dataset("toy", {}, 0, tmp_path), "train", "subsample") is None
    with pytest.raises(UserError, match="eval_train must be one of"):
        subsample_indices(ds, "train", "half")


@pytest.mark.parametrize("name", sorted(DATASETS.names()))
def test_every_split_the_collector_reads_is_evaluated_in_full(name):
    cls = DATASETS.get(name)
    facts = {f"{role}_split": getattr(cls, f"{role}_split") for role in ("val", "oracle", "id", "ood")}
    read = {role_split(facts, role) for role in ROLES} - {None}
    assert read and read <= reported_splits(cls) and "train" not in reported_splits(cls)


def test_cmnist_evaluates_val_oracle_and_test_in_full():
    assert reported_splits(DATASETS.get("cmnist")) == {"val", "oracle_val", "test"}


def batch_sizes_seen(run: Run) -> set[int]:
    """The batch sizes the run predicts in eval mode (training steps may call predict too)."""
    seen = set()
    alg, predict = run.algorithm, run.algorithm.predict
    alg.predict = lambda x: (alg.training or seen.add(len(x)), predict(x))[1]
    run.execute()
    return seen


def test_eval_batch_comes_from_the_table_and_an_explicit_value_wins(tmp_path, monkeypatch):
    monkeypatch.setitem(eval_batch.MEASURED, ("mlp", "cpu"), 100)
    args = RunArgs("toy", steps=1)
    run = Run(args, RunOptions(tmp_path / "a", tmp_path, "cpu", progress=False))
    assert run.eval_batch_size == 100 and max(batch_sizes_seen(run)) == 100
    run = Run(args, RunOptions(tmp_path / "b", tmp_path, "cpu", progress=False, eval_batch_size=33))
    assert max(batch_sizes_seen(run)) == 33
    assert eval_batch.eval_batch_size("mnist_cnn", torch.device("cpu")) != \
        eval_batch.eval_batch_size("lenet5", torch.device("cpu"))


def test_cli_eval_flags(tmp_path, capsys):
    base = ["train", "--dataset", "toy", "--dataset-args", '{"n_train": 8192}', "--steps", "2",
            "--data-dir", str(tmp_path), "--quiet", "--device", "cpu"]
    assert main(base + ["--output-dir", str(tmp_path / "f"), "--eval-train", "full"]) == 0
    assert "(n=8192)" in capsys.readouterr().out
    assert main(base + ["--output-dir", str(tmp_path / "s")]) == 0
    assert f"(n={SUBSAMPLE_MAX}, subsample)" in capsys.readouterr().out
    assert main(base + ["--output-dir", str(tmp_path / "z"), "--eval-batch-size", "0"]) == 2
    assert "evaluation batch size must be at least 1" in capsys.readouterr().err


def test_dry_run_command_keeps_the_eval_flags(tmp_path):
    job = Job(RunArgs("toy", steps=2), tmp_path / "j")
    cmd = train_command(job, JobEnv(tmp_path, "cpu", eval_train="full", eval_batch_size=64))
    assert "--eval-train full" in cmd and "--eval-batch-size 64" in cmd
    assert "--eval" not in train_command(job, JobEnv(tmp_path, "cpu"))
