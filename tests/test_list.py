"""`domainbed-sc list`: every registered entry, its description and labels, read from the registries."""
from __future__ import annotations

import pytest

from domainbed_sc.algorithms import ALGORITHMS
from domainbed_sc.cli import main
from domainbed_sc.commands.list import KINDS


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["list", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_entry_is_listed_with_a_description(capsys, kind):
    registry = KINDS[kind].registry()
    rc, out, _ = run(capsys, kind)
    assert rc == 0
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()[2:]}
    assert set(rows) == set(registry.names())
    for name, line in rows.items():  # a new entry without a docstring fails here
        assert line.rstrip(" |").split("|")[-1].strip(), f"{kind} {name} has no description"


def test_labels_are_the_declared_ones(capsys):
    _, out, _ = run(capsys, "algorithms")
    row = next(line for line in out.splitlines() if line.startswith("| GroupDRO "))
    assert row.split("|")[2].strip() == "g"
    _, out, _ = run(capsys, "datasets")
    row = next(line for line in out.splitlines() if line.startswith("| mnist_cifar "))
    assert row.split("|")[2].strip() == "g, s"


def test_hparams_lists_the_space_with_defaults_and_ranges(capsys):
    rc, out, _ = run(capsys, "algorithms", "--hparams", "GroupDRO")
    assert rc == 0
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines()[2:]}
    assert set(rows) == set(ALGORITHMS.get("GroupDRO").space())
    assert rows["groupdro_eta"][2].strip() == "0.01"
    assert rows["groupdro_eta"][3].strip() == "10^U(-3, -1)"  # DomainBed's range
    assert rows["lr"][2].strip() == "0.001 / 5e-05"  # small / large images


def test_dataset_arguments(capsys):
    rc, out, _ = run(capsys, "datasets", "--hparams", "mnist_cifar")
    assert rc == 0 and "n_backgrounds" in out and "an integer in [1, 5108]" in out


def test_unknown_name_is_one_line(capsys):
    rc, _, err = run(capsys, "algorithms", "--hparams", "NoSuch")
    assert rc == 2 and err.count("\n") == 1 and "unknown algorithm 'NoSuch'" in err
