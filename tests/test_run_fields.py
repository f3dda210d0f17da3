"""Every ``RunArgs`` field round-trips through what is derived from its declaration: the `train`
flags, a job's command line and, for per-sweep fields, the sweep file's key; so a new field
cannot be forgotten in one of them."""
from __future__ import annotations

import dataclasses
import math
import shlex

import pytest

from domainbed_sc.cli import build_parser, run_args
from domainbed_sc.commands.train_packed import pack_members
from domainbed_sc.sweep.jobs import Job, JobEnv
from domainbed_sc.sweep.launchers import train_command
from domainbed_sc.sweep.spec import RUN_KEYS, parse_sweep
from domainbed_sc.training.records import RunArgs

#: a value other than the default for every field (a new field fails the first test until it
#: has one); steps and epochs exclude each other, so each run below drops one of them
EXAMPLES = {"dataset": "toy", "algorithm": "IRM", "dataset_args": {"n_train": 64},
            "hparams": {"lr": 0.005, "rcl_margin": math.inf}, "hparams_seed": 3,
            "trial_seed": 4, "data_seed": 5, "steps": 7, "epochs": 2.5, "checkpoint_freq": 9,
            "hparams_per_trial": True}
FIELDS = [f.name for f in dataclasses.fields(RunArgs)]


def example(without: str) -> RunArgs:
    return RunArgs(**{k: v for k, v in EXAMPLES.items() if k != without})


def test_every_field_has_an_example_that_is_not_its_default():
    assert sorted(EXAMPLES) == sorted(FIELDS)
    default = RunArgs("mnist")
    assert all(getattr(example("epochs"), f) != getattr(default, f)
               for f in FIELDS if f != "epochs")
    assert example("steps").epochs != default.epochs


@pytest.mark.parametrize("args", [example("steps"), example("epochs"), RunArgs("toy")],
                         ids=["epochs", "steps", "defaults"])
def test_a_jobs_command_line_parses_back_to_its_args(tmp_path, args):
    argv = shlex.split(train_command(Job(args, tmp_path / "j"), JobEnv(tmp_path, "cpu")))
    assert argv[:2] == ["domainbed-sc", "train"]
    parsed = run_args(build_parser().parse_args(argv[1:]))
    assert parsed == args and parsed.dir_name() == args.dir_name()


def test_train_packed_takes_the_same_fields_with_lists_of_seeds(tmp_path):
    args = example("steps")
    flags = shlex.split(train_command(Job(args, tmp_path / "j"), JobEnv(tmp_path, "cpu")))[2:]
    flags = flags[:flags.index("--output-dir")]
    a = build_parser().parse_args(["train-packed", *flags, "--trial-seed", "4", "6",
                                   "--data-dir", str(tmp_path)])
    members = [m for m, _ in pack_members(a)]
    assert members == [args, dataclasses.replace(args, trial_seed=6)]


def test_mutually_exclusive_fields_are_refused_together(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "toy", "--steps", "3", "--epochs", "1"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("key", sorted(RUN_KEYS))
def test_every_per_sweep_field_is_a_sweep_key_that_reaches_every_job(key):
    raw = {"datasets": ["toy"], "algorithms": ["ERM"], "trial_seeds": [0, 1], key: EXAMPLES[key]}
    runs = parse_sweep(raw, "s").runs()
    assert len(runs) == 2 and all(getattr(r, key) == EXAMPLES[key] for r in runs)
    assert getattr(RunArgs("toy"), key) != EXAMPLES[key]
