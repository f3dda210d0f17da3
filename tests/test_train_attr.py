"""``train_attr: false`` (SubpopBench's ``train_attr: no``): the training and validation splits show
no s or g, methods that need them are refused before any data is read, the rest run, and the
test splits still report groups."""
from __future__ import annotations

import json

import torch

from domainbed_sc.cli import main
from domainbed_sc.datasets import load_dataset
from domainbed_sc.training.records import read_records

HIDDEN = json.dumps({"train_attr": False})


def test_training_and_validation_splits_hide_s_and_g_test_keeps_them(tmp_path):
    shown, hidden = load_dataset("toy", {}, 0, tmp_path), load_dataset("toy", {"train_attr": False}, 0, tmp_path)
    assert "s" in shown.provides and not {"s", "g"} & hidden.provides and "e" in hidden.provides
    for name in ("train", "val"):
        assert (hidden.splits[name].s == -1).all() and (hidden.splits[name].g == -1).all()
        assert (shown.splits[name].s >= 0).all()  # so the line above tests the mode, not the data
        assert torch.equal(hidden.splits[name].y, shown.splits[name].y)  # same data otherwise
    assert torch.equal(hidden.splits["test"].g, shown.splits["test"].g)


def test_methods_needing_attributes_are_refused_in_one_line(tmp_path, capsys):
    for argv, label in ((["--algorithm", "GroupDRO"], "group labels (g)"),
                        (["--algorithm", "DL"], "spurious-attribute labels (s)"),
                        (["--hparams", '{"sampler": "uniform_group"}'], "group labels (g)")):
        rc = main(["train", "--dataset", "toy", "--dataset-args", HIDDEN, *argv, "--steps", "2",
                   "--output-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and label in err[0] and '"train_attr": false' in err[0], err
        assert not (tmp_path / "r").exists()


def test_erm_runs_and_only_the_test_split_reports_groups(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "toy", "--dataset-args", HIDDEN, "--steps", "4",
                 "--output-dir", str(out), "--data-dir", str(tmp_path)]) == 0
    metrics = list(read_records(out / "results.jsonl"))[-1]["metrics"]
    assert "wga" not in metrics["train"] and "wga" not in metrics["val"]
    assert metrics["test"]["wga"] is not None and set(metrics["test"]["group_acc"]) == {"0", "1", "2", "3"}
