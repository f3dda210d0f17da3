"""The metrics beyond AA and WGA (docs/METHODS.md §P.3): worst-class and balanced accuracy,
macro-F1 and ECE on hand cases and against scikit-learn; the t interval against scipy's; and
old records without the new fields still collect."""
from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from domainbed_sc.collect import stats
from domainbed_sc.datasets.base import TensorSplit
from domainbed_sc.metrics import ECE_BINS, METRICS, columns
from domainbed_sc.training.evaluation import split_metrics


def metrics_of(y, pred, probs=None, s=None):
    y, pred = torch.tensor(y), torch.tensor(pred)
    split = TensorSplit(torch.zeros(len(y), 1), y, None if s is None else torch.tensor(s),
                        num_attributes=2 if s is not None else 1)
    groups = 2 * (2 if s is not None else 1)
    return split_metrics(pred, split, groups, torch.ones(groups), probs=probs)


def confident(conf: float, y: list[int], pred: list[int]) -> torch.Tensor:
    """Two-class probabilities giving every example confidence ``conf`` in its prediction."""
    pred_t = torch.tensor(pred)
    probs = torch.full((len(pred), 2), 1 - conf, dtype=torch.double)
    probs[torch.arange(len(pred)), pred_t] = conf
    return probs


def test_ece_is_zero_when_calibrated_and_the_overconfidence_gap_otherwise():
    y = [0] * 8 + [1] * 2
    pred = [0] * 10  # 80 % correct at confidence 0.8: calibrated
    assert metrics_of(y, pred, confident(0.8, y, pred))["ece"] == pytest.approx(0.0, abs=1e-6)  # float32 bins
    y = [0, 1] * 5  # 50 % correct at confidence 0.99
    pred = [0] * 10
    assert metrics_of(y, pred, confident(0.99, y, pred))["ece"] == pytest.approx(0.49)


def test_ece_weights_each_bin_by_its_share():
    # bin (0.6, 0.667]: 4 examples at 0.65, 2 right (gap 0.15); bin (0.933, 1]: 6 at 0.95, all right
    y, pred = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    probs = torch.cat([confident(0.65, y[:4], pred[:4]), confident(0.95, y[4:], pred[4:])])
    expected = 0.4 * abs(0.5 - 0.65) + 0.6 * abs(1.0 - 0.95)
    assert ECE_BINS == 15 and metrics_of(y, pred, probs)["ece"] == pytest.approx(expected)


def test_class_metrics_on_a_hand_case():
    # class 0: 3 of 4 right; class 1: 1 of 2; class 2: 2 of 2; class 3 absent from the labels
    y = [0, 0, 0, 0, 1, 1, 2, 2]
    pred = [0, 0, 0, 3, 1, 2, 2, 2]
    m = metrics_of(y, pred)
    assert m["balanced_acc"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert m["worst_class_acc"] == pytest.approx(0.5)
    assert m["acc"] == pytest.approx(6 / 8)
    assert m["ece"] is None  # no probabilities given
    assert "wga" not in m and "group_acc" not in m  # no attribute labels: no group metrics


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_and_balanced_acc_match_scikit_learn(seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (200,), generator=gen)
    pred = torch.where(torch.rand(200, generator=gen) < 0.6, y, torch.randint(0, 5, (200,), generator=gen))
    m = metrics_of(y.tolist(), pred.tolist())  # class 4 only ever predicted
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))


def test_group_metrics_stay_beside_the_class_metrics():
    m = metrics_of([0, 0, 1, 1], [0, 1, 1, 1], s=[0, 1, 1, 0])
    assert m["wga"] == 0.0 and m["worst_class_acc"] == 0.5 and m["group_n"] == {"0": 1, "1": 1, "2": 1, "3": 1}


def test_t_interval_matches_scipy_and_a_known_value():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    # t_{0.975, 4} = 2.7764 (any table); std = sqrt(2.5)
    assert s.ci95 == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    lo, hi = stats.stats.t.interval(0.95, 4, loc=3.0, scale=math.sqrt(2.5) / math.sqrt(5))
    assert (s.mean - s.ci95, s.mean + s.ci95) == (pytest.approx(lo), pytest.approx(hi))


def test_every_metric_declares_what_the_rest_reads():
    for name in METRICS:
        m = METRICS[name]
        assert m.title and m.definition and m.columns and m.describe().startswith(m.title)
    assert not METRICS["ece"].higher_is_better and "Lower is better" in METRICS["ece"].describe()
    cols = columns()
    assert cols["wga"].column == "ood_wga" and cols["val_worst_class_acc"].column == "val_worst_class_acc"


def test_new_records_carry_every_metric_and_old_ones_collect_as_missing(tmp_path):
    import json

    from domainbed_sc.training.records import DONE, RESULTS, RunArgs, read_records
    from domainbed_sc.training.trainer import RunOptions, train
    from test_collect import run_cli

    new = train(RunArgs("toy", steps=2), RunOptions(tmp_path / "runs" / "new", tmp_path, "cpu", progress=False))
    records = list(read_records(new / RESULTS))
    for split in ("val", "test"):
        m = records[-1]["metrics"][split]
        assert set(METRICS) <= set(m) and all(0 <= m[k] <= 1 for k in METRICS)
    old = records[-1]  # as written before the class metrics: another cell (lr), no new fields
    old["args"]["hparams"] = {"lr": 0.01}
    for m in old["metrics"].values():
        for key in ("worst_class_acc", "balanced_acc", "macro_f1", "ece"):
            del m[key]
    old_dir = tmp_path / "runs" / RunArgs(**old["args"]).dir_name()
    old_dir.mkdir()
    (old_dir / RESULTS).write_text(json.dumps(old) + "\n")
    (old_dir / DONE).write_text("done\n")
    code, out, _ = run_cli(tmp_path / "runs", "--selection", "last",
                           "--metric", "ood_acc,balanced_acc,ece")
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| ERM")]
    assert len(rows) == 2 and sum("n/a" in r for r in rows) == 1  # the old run: missing
    assert "balanced acc: the mean, over the classes present" in out
    assert "ECE (expected calibration error): " in out and "Lower is better" in out
