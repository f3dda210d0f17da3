"""A launcher is one registered class: `sweep launch` offers it, adds its options as flags and
builds it from them, with nothing else to edit (the README's "Adding a launcher" example)."""
from __future__ import annotations

import pytest

from domainbed_sc.cli import build_parser, main
from domainbed_sc.sweep.launchers import LAUNCHERS, Launcher, Option

SWEEP = "datasets: [toy]\nalgorithms: [ERM]\ntrial_seeds: [0, 1]\nsteps: 2\n"


class EchoLauncher(Launcher):
    description = "print each job's name and run nothing"
    options = (Option("--prefix", "text before each name"), Option("--repeat", "times", int, minimum=1))
    runs_jobs = False

    def __init__(self, prefix=None, repeat=None):
        self.prefix, self.repeat = prefix or "", repeat or 1

    def launch(self, jobs, env):
        for job in jobs:
            print((self.prefix + job.name + " ") * self.repeat)
        return jobs


def launch_help(capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "launch", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_registered_launcher_is_a_choice_with_its_description(capsys):
    text = launch_help(capsys)
    for name in LAUNCHERS.names():
        assert f"{name}: {' '.join(LAUNCHERS.get(name).description.split())}" in text
    assert "{" + ",".join(LAUNCHERS.names()) + "}" in text
    assert "--workers" in text and "--max-requeues N" in text  # the launchers' own options
    assert "echo" not in text


def test_a_registered_class_is_all_a_new_launcher_needs(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(SWEEP)
    with LAUNCHERS.temporary("echo", EchoLauncher):
        text = launch_help(capsys)
        assert "echo: print each job's name and run nothing" in text and "--prefix PREFIX" in text
        assert main(["sweep", "launch", str(path), "--launcher", "echo", "--prefix", "job=",
                     "--output-root", str(tmp_path / "out")]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].endswith("launcher echo (given)")
        assert len([line for line in out if line.startswith("job=toy_ERM")]) == 2
        assert not (tmp_path / "out" / ".sweeps").exists()  # runs_jobs False: no manifest
        assert main(["sweep", "launch", str(path), "--launcher", "echo", "--repeat", "0",
                     "--output-root", str(tmp_path / "out")]) == 2
        assert "--repeat must be at least 1, got 0" in capsys.readouterr().err
    assert "echo" not in LAUNCHERS


def test_an_unknown_launcher_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "launch", "s.yaml", "--launcher", "ssh"])
    assert "invalid choice: 'ssh'" in capsys.readouterr().err
