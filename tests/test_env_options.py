"""Every environment option of ``RunOptions`` round-trips through what is derived from its
declaration (training/options.py): a job's environment, its command line and the flags of
`train`, `train-packed` and `sweep launch`; so a new option cannot be forgotten in one of them."""
from __future__ import annotations

import dataclasses
import shlex

import pytest

from domainbed_sc.cli import build_parser, env_options
from domainbed_sc.commands.train_packed import pack_members
from domainbed_sc.sweep.jobs import Job, JobEnv
from domainbed_sc.sweep.launchers import train_command
from domainbed_sc.training.options import env_fields
from domainbed_sc.training.records import RunArgs

#: a value other than the default for every option (a new option fails the first test until it
#: has one)
EXAMPLES = {"device": "cpu", "eval_train": "full", "eval_batch_size": 64, "tensorboard": True}


def test_every_option_has_an_example_that_is_not_its_default():
    names = [f.name for f in env_fields()]
    assert names[0] == "data_dir" and sorted(EXAMPLES) == sorted(names[1:])
    assert all(EXAMPLES[f.name] != f.default for f in env_fields()[1:])


def parsed_env(argv: list[str]) -> JobEnv:
    return JobEnv(**env_options(build_parser().parse_args(argv)))


@pytest.mark.parametrize("given", [EXAMPLES, {}], ids=["examples", "defaults"])
def test_a_jobs_environment_survives_its_command_line(tmp_path, given):
    env = JobEnv(tmp_path.resolve(), **given)
    argv = shlex.split(train_command(Job(RunArgs("toy", steps=2), tmp_path / "j"), env))
    assert parsed_env(argv[1:]) == env
    assert env.options(Job(RunArgs("toy"), tmp_path / "j")).tensorboard is env.tensorboard


def test_defaults_leave_only_where_the_job_runs_on_its_command_line(tmp_path):
    cmd = train_command(Job(RunArgs("toy", steps=2), tmp_path / "j"), JobEnv(tmp_path))
    assert cmd.endswith(f"--data-dir {tmp_path} --device auto")


@pytest.mark.parametrize("command", [["train-packed", "--dataset", "toy", "--trial-seed", "0", "1"],
                                     ["sweep", "launch", "sweeps/x.yaml"]], ids=["packed", "sweep"])
def test_train_packed_and_sweep_launch_take_every_option(tmp_path, command):
    env = JobEnv(tmp_path.resolve(), **EXAMPLES)
    flags = shlex.split(train_command(Job(RunArgs("toy"), tmp_path / "j"), env))
    a = build_parser().parse_args([*command, *flags[flags.index("--data-dir"):]])
    assert JobEnv(**env_options(a)) == env
    if command[0] == "train-packed":
        members = [opts for _, opts in pack_members(a)]
        assert len(members) == 2 and all(
            {f.name: getattr(opts, f.name) for f in env_fields()} == dataclasses.asdict(env)
            for opts in members)
