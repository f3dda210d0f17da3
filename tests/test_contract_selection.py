"""A golden case for every registered selection method and table metric (collect/methods.py
METHODS and PARAMETRIC; the table columns of domainbed_sc/metrics.py), on hand-built records
whose right answer is known: every method keeps different checkpoints or a different hparams
draw, except training_domain_val, which is best_val_acc by definition (our val split is the
pooled training-environment holdout, DomainBed's IID selection).  A registered name without a golden
case fails."""
from __future__ import annotations

import pandas as pd
import pytest

from domainbed_sc.collect.reader import LENGTH, ROLES
from domainbed_sc.collect.methods import METHODS, PARAMETRIC, parse_methods
from domainbed_sc.collect.selection import select
from domainbed_sc.collect.tables import aggregate
from domainbed_sc.metrics import METRICS, columns

# run -> (hparams_seed, num_stages, [(step, stage, val_acc, val_wga, oracle_acc, val worst-class)])
RUNS = {
    # a stage-1 checkpoint better at everything: never a candidate (docs/METHODS.md §P.4)
    "a": (1, 2, [(0, 1, 1.00, 1.00, 1.00, 1.00),
                 (1, 2, 0.96, 0.00, 0.50, 0.70),    # first val acc >= 0.95; best worst-class
                 (2, 2, 0.99, 0.10, 0.50, 0.50),    # best val acc
                 (3, 2, 0.90, 0.60, 0.50, 0.40),    # best (acc + wga) / 2
                 (4, 2, 0.60, 0.80, 0.50, 0.30),    # best wga
                 (5, 2, 0.85, 0.05, 0.70, 0.20)]),  # last
    "b": (2, 1, [(1, 1, 0.90, 0.50, 0.50, 0.80),    # best worst-class, above a's
                 (2, 1, 0.94, 0.20, 0.50, 0.30),    # best val acc; never reaches 0.95
                 (3, 1, 0.70, 0.90, 0.50, 0.20),    # best wga and (acc + wga) / 2
                 (4, 1, 0.92, 0.40, 0.60, 0.10)]),  # last
}
# method -> ({run: kept step}, the chosen draw's hparams_seed)
GOLDEN = {
    "last": ({"a": 5, "b": 4}, 2),
    "best_val_acc": ({"a": 2, "b": 2}, 1),
    "best_val_wga": ({"a": 4, "b": 3}, 2),
    "best_val_mean_aa_wga": ({"a": 3, "b": 3}, 2),
    "training_domain_val": ({"a": 2, "b": 2}, 1),
    "oracle": ({"a": 5, "b": 4}, 1),
    "early_stop_val_acc": ({"a": 1, "b": 4}, 1),
    "worst_class_val": ({"a": 1, "b": 1}, 2),
}
# parametric method -> (threshold, golden): at 0.98 only a's step 2 qualifies
GOLDEN_PARAMETRIC = {"early_stop_val_acc": (0.98, ({"a": 2, "b": 4}, 1))}
# metric -> its value (%) at run a's last checkpoint (0.5 elsewhere), each metric its own column
VALUES = {f"{role}_{field}": 0.01 * (10 * i + j + 1)
          for i, role in enumerate(ROLES) for j, field in enumerate(METRICS)}
GOLDEN_METRICS = {"id_acc": 21.0, "ood_acc": 31.0, "wga": 32.0, "acc_adj": 34.0,
                  "acc_gmean": 33.0, "id_wga": 22.0, "val_acc": 1.0, "val_wga": 2.0,
                  "worst_class_acc": 35.0, "val_worst_class_acc": 5.0, "balanced_acc": 36.0,
                  "macro_f1": 37.0, "ece": 38.0, "id_ece": 28.0}


def records() -> pd.DataFrame:
    rows = []
    for run, (hseed, stages, checkpoints) in RUNS.items():
        for step, stage, val_acc, val_wga, oracle_acc, val_wca in checkpoints:
            rows.append({**VALUES, **dict.fromkeys(LENGTH), "run": run, "cell": "c",
                         "dataset": "toy", "algorithm": "ERM", "hparams_seed": hseed,
                         "trial_seed": 0, "hparams_per_trial": False, "step": step,
                         "epoch": float(step), "stage": stage,
                         "num_stages": stages, "val_split": "val", "id_split": "val",
                         "ood_split": "test", "val_acc": val_acc, "val_wga": val_wga,
                         "oracle_acc": oracle_acc, "val_worst_class_acc": val_wca})
    return pd.DataFrame(rows)


def check(method, golden) -> None:
    steps, hseed = golden
    selected = select(records(), method)
    assert dict(zip(selected.all_draws["run"], selected.all_draws["step"])) == steps
    assert set(selected.runs["hparams_seed"]) == {hseed}
    assert not selected.not_applicable


@pytest.mark.parametrize("name", list(METHODS))
def test_selection_method_golden(name):
    if name not in GOLDEN:
        pytest.fail(f"selection method {name} has no golden case in {__name__}.GOLDEN")
    check(METHODS[name], GOLDEN[name])


@pytest.mark.parametrize("name", list(PARAMETRIC))
def test_parametric_selection_method_golden(name):
    if name not in GOLDEN_PARAMETRIC:
        pytest.fail(f"parametric selection {name} has no golden case in {__name__}.GOLDEN_PARAMETRIC")
    threshold, golden = GOLDEN_PARAMETRIC[name]
    check(parse_methods(f"{name}@{threshold}")[0], golden)


def test_the_golden_cases_tell_the_methods_apart():
    cases = [tuple(sorted(steps.items())) + (h,) for steps, h in GOLDEN.values()]
    # only training_domain_val and best_val_acc share their case, by definition
    assert len(set(cases)) == len(cases) - 1


@pytest.mark.parametrize("key", list(columns()))
def test_metric_golden(key):
    if key not in GOLDEN_METRICS:
        pytest.fail(f"metric {key} has no golden case in {__name__}.GOLDEN_METRICS")
    recs = records()
    recs = recs[recs["run"] == "a"].copy()
    last = recs["step"] == recs["step"].max()
    for column, value in VALUES.items():  # the metric must read the selected checkpoint's
        recs[column] = value
        recs.loc[~last, column] = 0.5
    table = aggregate(select(recs, METHODS["last"]), [columns()[key]], exclude_dead=False)
    assert table[f"{key}_mean"].iloc[0] == pytest.approx(GOLDEN_METRICS[key])
