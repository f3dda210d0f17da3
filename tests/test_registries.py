"""A new metric, selection method or sampler is one registry entry (``Registry.temporary``, so
nothing leaks): everything else (records, the reader, table columns and their definitions, the
command-line help, planning, the labels a run needs) picks it up from the entry."""
from __future__ import annotations

import pytest
import torch

from domainbed_sc.algorithms import ALGORITHMS
from domainbed_sc.collect import selection
from domainbed_sc.collect.methods import METHODS, Method, metric, parse_methods
from domainbed_sc.commands.collect import method_help, metric_help
from domainbed_sc.datasets.base import TensorSplit
from domainbed_sc.errors import UserError
from domainbed_sc.metrics import METRICS, Metric
from domainbed_sc.training.evaluation import split_metrics
from domainbed_sc.training.samplers import SAMPLERS, RandomSampler, make_sampler
from domainbed_sc.training.records import RunArgs
from domainbed_sc.training.trainer import check_run
from test_collect import record, run_cli, write_run
from test_contract_selection import records


class ErrorRate(Metric):
    title = "error rate"
    definition = "one minus AA"
    higher_is_better = False
    columns = (("ood", "ood_err", "OOD error"), ("val", "val_err", "val error"))

    @staticmethod
    def compute(p):
        return 1 - p.correct.mean().item()


def test_a_new_metric_is_one_registry_entry(tmp_path):
    with METRICS.temporary("err", ErrorRate):
        y = torch.tensor([0, 1, 1, 1])
        split = TensorSplit(torch.zeros(4, 1), y, num_attributes=1)
        assert split_metrics(torch.tensor([0, 1, 0, 0]), split, 2, torch.ones(2))["err"] == 0.5
        rec = record(1, val=(0.8, 0.6), test=(0.7, 0.5))
        rec["metrics"]["test"]["err"] = 0.3
        write_run(tmp_path, [rec])
        code, out, _ = run_cli(tmp_path, "--metric", "ood_acc,ood_err")
        assert code == 0 and "| OOD error" in out and "| 30.0 " in out
        assert "error rate: one minus AA. Lower is better." in out
        assert "ood_err (error rate on the ood split)" in metric_help()
        # the metric's direction steers a selection by it: the lowest val error wins
        by_err = Method("best_val_err", "lowest validation error", metric("val", "err"),
                        metric("val", "err"), "lowest val error", "val error", "a validation split")
        recs = records().assign(val_err=lambda df: 1 - df["val_acc"])
        best_acc = selection.select(recs, METHODS["best_val_acc"]).all_draws
        assert list(selection.select(recs, by_err).all_draws["step"]) == list(best_acc["step"])
    assert "err" not in METRICS


def test_a_new_selection_method_is_one_registry_entry():
    method = Method("best_val_gmean", "best validation group-mean accuracy",
                    metric("val", "acc_gmean"), metric("val", "acc_gmean"), "best val acc_gmean",
                    "val acc_gmean", "a validation split with group labels")
    with METHODS.temporary(method.name, method):
        assert parse_methods("last,best_val_gmean")[1] is method
        assert "best_val_gmean (best validation group-mean accuracy)" in method_help()
        planned = [m.name for m, _ in selection.plan(records(), selection.ALL, "last")]
        assert planned == list(METHODS) and planned[-1] == "best_val_gmean"
    assert "best_val_gmean" not in METHODS and method.name == "best_val_gmean"


class EnvRandomSampler(RandomSampler):
    needs = "e"


def test_a_new_sampler_is_one_registry_entry():
    with SAMPLERS.temporary("random_env_checked", EnvRandomSampler):
        # its label requirement reaches the check (mnist_cifar has no environments)
        with pytest.raises(UserError, match="sampler random_env_checked needs environment labels"):
            check_run(RunArgs("mnist_cifar", "ERM", hparams={"sampler": "random_env_checked"}))
        check_run(RunArgs("mnist_cifar", "ERM", hparams={"sampler": "random"}))
        e = torch.tensor([0, 0, -1, 1])
        sampler = make_sampler("random_env_checked", torch.zeros(4, dtype=torch.long),
                               e.clamp(min=0), 2, seed=0)
        assert isinstance(sampler, EnvRandomSampler)
        with pytest.raises(UserError, match="needs an environment label on every training example"):
            make_sampler("random_env_checked", torch.zeros(4, dtype=torch.long), e, 2, seed=0)
    assert "random_env_checked" not in SAMPLERS
