"""The collector on hand-made results.jsonl files with known answers, and on real toy runs."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from domainbed_sc.cli import main
from domainbed_sc.collect import plots, reader, selection, stats, tables
from domainbed_sc.collect.methods import METHODS
from domainbed_sc.errors import UserError
from domainbed_sc.training.records import DONE, RESULTS, RunArgs

GOLDEN = Path(__file__).parent / "golden"

# A dataset description in the shape of GroupDataset.describe(): val for selection, test_id for
# ID accuracy, test as the OOD/test split, no oracle split.
TOY = {"name": "toy", "args": {"correlation": 0.9}, "num_classes": 2, "num_attributes": 2,
       "num_groups": 4, "val_split": "val", "oracle_split": None, "id_split": "test_id",
       "ood_split": "test"}
# MNIST-CIFAR's protocol: no val split, no group labels on the OOD split
MC = {"name": "mnist_cifar", "args": {"n_backgrounds": 8}, "num_classes": 2, "num_attributes": 1,
      "num_groups": 2, "val_split": None, "oracle_split": None, "id_split": "test_id",
      "ood_split": "test_ood"}


def split(acc, wga=None, groups=None):
    m = {"n": 100, "acc": acc}
    if wga is not None:
        m.update({"wga": wga, "acc_gmean": (acc + wga) / 2, "acc_adj": acc, "worst_class_acc": wga,
                  "group_acc": groups or {"0": acc, "3": wga}, "group_n": {"0": 50, "3": 50}})
    return m


def record(step, *, dataset=TOY, algorithm="ERM", hparams_seed=0, trial_seed=0, hparams=None,
           val=None, test_id=0.9, test=None, epoch=None, stage=None, per_trial=False):
    """One record; ``val`` / ``test`` are (acc, wga) pairs or a plain acc (no groups);
    ``stage`` = (stage, num_stages), or None for a record from before records named it."""
    args = RunArgs(dataset["name"], algorithm, dict(dataset["args"]), dict(hparams or {}),
                   hparams_seed, trial_seed, trial_seed, epochs=4, hparams_per_trial=per_trial)
    metrics = {"test_id": split(test_id, test_id)}
    for name, value in (("val", val), (dataset["ood_split"], test)):
        if value is not None:
            metrics[name] = split(*value) if isinstance(value, tuple) else split(value)
    return {"args": args.as_dict(), "hparams": {"lr": 0.001, **(hparams or {})}, "dataset": dataset,
            "step": step, "epoch": step / 10 if epoch is None else epoch, "losses": {"loss": 0.1},
            "metrics": metrics, "wall_time": 1.0, "device": "cpu", "extra": {},
            **({} if stage is None else {"stage": stage[0], "num_stages": stage[1]})}


def write_run(root: Path, records: list[dict], done: bool = True, name: str | None = None) -> Path:
    args = RunArgs(**records[0]["args"])
    run_dir = root / (name or args.dir_name())
    run_dir.mkdir(parents=True)
    (run_dir / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))
    if done:
        (run_dir / DONE).write_text("done\n")
    return run_dir


# -- selection -------------------------------------------------------------------------------
# Validation (acc, wga) per step: best acc at step 1, best wga at 2, best (acc+wga)/2 at 3, last 4.
VAL_CURVE = {1: (0.90, 0.10), 2: (0.70, 0.50), 3: (0.80, 0.45), 4: (0.60, 0.30)}
# Additive offsets of the validation metrics per (hparams_seed, trial_seed): draw 0 is better for
# trial seed 0, draw 1 is better on average (0.05 - 0.08 < 0).
VAL_OFFSET = {(0, 0): 0.05, (0, 1): -0.08, (1, 0): 0.0, (1, 1): 0.0}


def ood_of(step, h, t):
    """Test accuracy encodes (step, draw, seed); draw 0 is better on test (for the oracle)."""
    return round(0.1 * step + 0.01 * (1 - h) + 0.001 * t, 6)


@pytest.fixture
def sweep_dir(tmp_path):
    for (h, t), off in VAL_OFFSET.items():
        write_run(tmp_path, [record(s, hparams_seed=h, trial_seed=t,
                                    val=(acc + off, wga + off), test=(ood_of(s, h, t), 0.05 * s))
                             for s, (acc, wga) in VAL_CURVE.items()])
    return tmp_path


@pytest.mark.parametrize("method, step, draw", [
    ("last", 4, 1),  # val acc at step 4: draw 0 averages 0.585, draw 1 0.60
    ("best_val_acc", 1, 1),
    ("training_domain_val", 1, 1),
    ("best_val_wga", 2, 1),
    ("best_val_mean_aa_wga", 3, 1),
    ("oracle", 4, 0),  # last checkpoint, draw by test accuracy (draw 0 is better there)
])
def test_selection_picks_checkpoint_and_one_draw_for_all_seeds(sweep_dir, method, step, draw):
    records = reader.read_runs([sweep_dir]).records
    chosen = selection.select(records, METHODS[method]).runs
    # draw 0 is the better one for trial seed 0, yet both seeds report the draw best on average
    assert sorted(zip(chosen.trial_seed, chosen.hparams_seed, chosen.step)) == [
        (0, draw, step), (1, draw, step)]
    assert sorted(chosen.ood_acc) == [ood_of(step, draw, 0), ood_of(step, draw, 1)]
    assert set(chosen.draws) == {2}


def offset_sweep(root: Path, per_trial: bool) -> pd.DataFrame:
    """``sweep_dir`` with the offsets on test accuracy too, so that for every method (the oracle
    included) draw 0 is best for trial seed 0, draw 1 for trial seed 1, and draw 1 on average."""
    for (h, t), off in VAL_OFFSET.items():
        write_run(root, [record(s, hparams_seed=h, trial_seed=t, per_trial=per_trial,
                                val=(acc + off, wga + off), test=(ood_of(s, h, t) + off, 0.05 * s))
                         for s, (acc, wga) in VAL_CURVE.items()])
    return reader.read_runs([root]).records


@pytest.mark.parametrize("method, step", [
    ("last", 4), ("best_val_acc", 1), ("training_domain_val", 1), ("best_val_wga", 2),
    ("best_val_mean_aa_wga", 3), ("oracle", 4), ("early_stop_val_acc@0.7", 1)])
def test_per_trial_search_selects_each_trial_seeds_own_best_draw(tmp_path, method, step):
    """DomainBed's search: the best draw per (cell, trial seed) by that seed's own score."""
    m = selection.parse_methods(method)[0]
    per_trial = selection.select(offset_sweep(tmp_path / "per_trial", True), m).runs
    shared = selection.select(offset_sweep(tmp_path / "shared", False), m).runs
    assert sorted(zip(per_trial.trial_seed, per_trial.hparams_seed, per_trial.step)) == [
        (0, 0, step), (1, 1, step)]
    assert sorted(zip(shared.trial_seed, shared.hparams_seed)) == [(0, 1), (1, 1)]  # one for both
    assert set(per_trial.draws) == {2}


def test_per_trial_table_summarizes_each_seeds_selected_run_and_says_so(tmp_path):
    sel = selection.select(offset_sweep(tmp_path, True), METHODS["training_domain_val"])
    metrics = tables.parse_metrics("ood_acc")
    [row] = tables.aggregate(sel, metrics, False).to_dict("records")
    chosen = [100 * (ood_of(1, 0, 0) + VAL_OFFSET[0, 0]), 100 * ood_of(1, 1, 1)]
    assert (row["hparams_seed"], row["n"], row["draws"]) == ("0/1", 2, 2)
    assert row["ood_acc_mean"] == pytest.approx(sum(chosen) / 2)
    assert row["ood_acc_std"] == pytest.approx(abs(chosen[0] - chosen[1]) / math.sqrt(2))
    agg = tables.aggregate(sel, metrics, False)
    text = tables.render([tables.Section(sel, agg)], tables.MARKDOWN, metrics, [], False, False, "")
    assert "per grid cell and trial seed" in text and "averaged over trial seeds" not in text
    table_end = text.index("Cells: mean ± std")
    assert "Hyperparameter search: per trial seed, as DomainBed's" in text[table_end:]
    assert "| 0/1 " in text


def test_shared_and_per_trial_runs_are_separate_cells(tmp_path):
    offset_sweep(tmp_path, True)
    records = offset_sweep(tmp_path, False)
    assert records["cell"].nunique() == 2
    sel = selection.select(records, METHODS["oracle"])
    agg = tables.aggregate(sel, tables.parse_metrics("ood_acc"), False)
    assert sorted(zip(agg.hparams_per_trial, agg.hparams_seed.astype(str))) == [
        (False, "1"), (True, "0/1")]
    text = tables.render([tables.Section(sel, agg)], tables.MARKDOWN, tables.parse_metrics("ood_acc"),
                         [], False, False, "")
    assert "hparams_per_trial=True rows" in text and "Other rows: the shared search" in text
    assert "averaged over trial seeds" in text and "per grid cell and trial seed" in text


def test_checkpoint_ties_keep_the_earliest_and_draw_ties_the_lowest_seed(tmp_path):
    for h in (0, 1):
        write_run(tmp_path, [record(s, hparams_seed=h, val=(0.8, 0.5), test=(0.1 * s, 0.0))
                             for s in (1, 2, 3)])
    chosen = selection.select(reader.read_runs([tmp_path]).records,
                              METHODS["best_val_acc"]).runs
    assert list(zip(chosen.hparams_seed, chosen.step)) == [(0, 1)]


def test_early_stopping_counts_epochs_not_evaluations(tmp_path):
    # two evaluations per epoch (epoch = step / 2); val acc stalls after step 2 (epoch 1; step 4
    # gains less than min_delta = 1e-4), then peaks at step 7 (epoch 3.5)
    curve = {1: 0.50, 2: 0.60, 3: 0.59, 4: 0.60005, 5: 0.58, 6: 0.59, 7: 0.90}
    write_run(tmp_path, [record(s, val=(acc, acc / 2), test=(0.1 * s, 0.0), epoch=s / 2)
                         for s, acc in curve.items()])
    records = reader.read_runs([tmp_path]).records
    method = METHODS["best_val_acc"]

    def step(stopping):
        return list(selection.select(records, method, stopping).runs.step)

    assert step(None) == [7]
    # 2 epochs after epoch 1 is step 6: stopped there; the best checkpoint it evaluated is step 4
    assert step(selection.EarlyStopping(patience=2)) == [4]
    assert step(selection.EarlyStopping(patience=2, min_delta=0.0)) == [7]  # step 4 counts
    # 3 evaluations without gain (steps 3-5) but not 3 epochs: the run goes on to step 7
    assert step(selection.EarlyStopping(patience=3)) == [7]
    assert step(selection.EarlyStopping(patience=1)) == [4]  # stopped at step 4 (epoch 2)
    stopped = selection.select(records, method, selection.EarlyStopping(2))
    assert "stops once 2 epochs pass" in stopped.describe()
    last = selection.select(records, METHODS["last"], selection.EarlyStopping(2))
    assert list(last.runs.step) == [7] and "stops once" not in last.describe()


def test_early_stopping_needs_the_patience_in_final_stage_epochs(tmp_path):
    # a JTT-like run: stage 1 at epochs 1-3 (never selected), stage 2 from epoch 4; the best
    # stage-2 score is epoch 4, so with patience 2 the run stops at epoch 6, before epoch 7's peak
    vals = {1: 0.99, 2: 0.99, 3: 0.99, 4: 0.7, 5: 0.6, 6: 0.6, 7: 0.9}
    write_run(tmp_path, [record(s, algorithm="JTT", val=(a, a), test=(0.1 * s, 0.0), epoch=s,
                                stage=(1 if s <= 3 else 2, 2)) for s, a in vals.items()])
    records = reader.read_runs([tmp_path]).records
    chosen = selection.select(records, METHODS["best_val_acc"], selection.EarlyStopping(2))
    assert list(chosen.runs.step) == [4]


def jtt_like_run(root: Path, trial_seed=0, done_stages=(1, 2)) -> None:
    """Stage 1 (steps 1-3) has the best validation scores of every kind; stage 2 steps 4-6."""
    curve = {1: (0.99, 0.98), 2: (0.97, 0.99), 3: (0.985, 0.985),
             4: (0.70, 0.40), 5: (0.80, 0.60), 6: (0.75, 0.50)}
    write_run(root, [record(s, algorithm="JTT", trial_seed=trial_seed, val=v,
                            test=(0.1 * s, 0.05 * s), stage=(1 if s <= 3 else 2, 2))
                     for s, v in curve.items() if (1 if s <= 3 else 2) in done_stages])


@pytest.mark.parametrize("method", [*METHODS, "early_stop_val_acc@0.75"])
def test_selection_considers_only_final_stage_checkpoints(tmp_path, method):
    jtt_like_run(tmp_path)
    records = reader.read_runs([tmp_path]).records
    chosen = selection.select(records, selection.parse_methods(method)[0]).runs
    assert len(chosen) == 1 and chosen.stage.iloc[0] == 2 and chosen.step.iloc[0] >= 4
    expected = {"best_val_acc": 5, "best_val_wga": 5, "training_domain_val": 5,
                "best_val_mean_aa_wga": 5, "early_stop_val_acc@0.75": 5, "worst_class_val": 5}
    assert chosen.step.iloc[0] == expected.get(method, 6)  # last, oracle; RCL@95: none reach it


def test_multistage_runs_without_final_stage_are_unfinished_and_tables_say_so(tmp_path):
    jtt_like_run(tmp_path / "a", trial_seed=0)
    jtt_like_run(tmp_path / "b", trial_seed=1, done_stages=(1,))  # done, yet stage 2 never ran
    collection = reader.read_runs([tmp_path])
    assert collection.records.trial_seed.unique().tolist() == [0]
    assert "1 multi-stage run without a final-stage checkpoint" in collection.skipped.summary()
    code, out, _ = run_cli(tmp_path, "--selection", "best_val_acc")
    assert code == 0 and "Multi-stage methods (JTT): only checkpoints of their final stage" in out


def test_records_without_stage_are_single_stage(tmp_path):
    write_run(tmp_path, [record(s, val=(1 - 0.1 * s, 0.5)) for s in (1, 2)])
    records = reader.read_runs([tmp_path]).records
    assert records.stage.tolist() == [1, 1] and records.num_stages.tolist() == [1, 1]
    assert list(selection.select(records, METHODS["best_val_acc"]).runs.step) == [1]


def rcl_runs(root: Path) -> None:
    """Seed 0 reaches 95 % val acc at step 3; seed 1 never does (its last checkpoint counts)."""
    curves = {0: [0.80, 0.90, 0.95, 0.97, 0.96], 1: [0.70, 0.90, 0.94, 0.93, 0.92]}
    for t, curve in curves.items():
        write_run(root, [record(s, algorithm="RCL", trial_seed=t, val=(acc, acc),
                                test=(ood_of(s, 0, t), 0.05 * s))
                         for s, acc in enumerate(curve, start=1)])


def test_rcl_early_stop_takes_the_first_checkpoint_reaching_the_threshold(tmp_path):
    rcl_runs(tmp_path)
    records = reader.read_runs([tmp_path]).records

    def chosen(name):
        runs = selection.select(records, selection.parse_methods(name)[0]).runs
        return sorted(zip(runs.trial_seed, runs.step, runs.fallback))

    assert chosen("early_stop_val_acc") == [(0, 3, False), (1, 5, True)]
    assert chosen("early_stop_val_acc@0.9") == [(0, 2, False), (1, 2, False)]
    assert chosen("early_stop_val_acc@0.97") == [(0, 4, False), (1, 5, True)]
    for bad in ("early_stop_val_acc@x", "early_stop_val_acc@1.5", "early_stop_val_acc@0"):
        with pytest.raises(UserError, match="threshold must be a number in"):
            selection.parse_methods(bad)


def test_rcl_early_stop_markdown_matches_golden(tmp_path):
    rcl_runs(tmp_path)
    code, out, _ = run_cli(tmp_path, "--selection", "early_stop_val_acc,early_stop_val_acc@0.9",
                           "--summary-metric", "wga")
    assert code == 0
    body = out[:out.index("Collected")]  # the footer names tmp_path
    assert body == (GOLDEN / "collect_rcl_early_stop.md").read_text()


def test_an_infinite_hparam_reads_back_as_inf_and_keeps_its_run(tmp_path):
    """RCL's m = inf is stored encoded ({"__float__": "inf"}, records.encode_config); the table
    shows ``inf`` and the records are the run's own (the hash of the decoded arguments)."""
    from domainbed_sc.training.records import record_line
    for margin in (0.9, math.inf):  # two margins, so the table has an rcl_margin column
        recs = [record(s, algorithm="RCL", hparams={"rcl_margin": margin}, val=0.9, test=0.5)
                for s in (1, 2)]
        run_dir = tmp_path / RunArgs(**recs[0]["args"]).dir_name()
        run_dir.mkdir()
        (run_dir / RESULTS).write_bytes(b"".join(record_line(r) for r in recs))
        (run_dir / DONE).write_text("done\n")
    assert b'"__float__": "inf"' in (run_dir / RESULTS).read_bytes()
    loaded = reader.read_runs([tmp_path])
    assert sorted(loaded.records["hp:rcl_margin"]) == [0.9, 0.9, math.inf, math.inf]
    assert sum(loaded.skipped.foreign_records.values()) == 0
    code, out, _ = run_cli(tmp_path, "--selection", "last")
    assert code == 0 and "| inf " in out and "__float__" not in out


def test_plan_gives_each_run_its_sweeps_selection(tmp_path):
    """Run a in sweep s1 (best_val_acc), b in s1 and s2 (oracle), c in none (the default)."""
    dirs = {k: write_run(tmp_path, [record(1, trial_seed=t, val=(0.5, 0.5))]).name
            for k, t in (("a", 0), ("b", 1), ("c", 2))}
    (tmp_path / ".sweeps").mkdir()
    for name, methods, runs in (("s1", ["best_val_acc"], "ab"), ("s2", ["oracle"], "b")):
        (tmp_path / ".sweeps" / f"{name}.json").write_text(json.dumps(
            {"sweep": name, "selection": methods, "runs": [dirs[k] for k in runs]}))
    (tmp_path / ".sweeps" / "torn.json").write_text("{")
    collection = reader.read_runs([tmp_path])
    assert "1 foreign file" in collection.skipped.summary()
    plan = selection.plan(collection.records, None, "last")
    assert [(m.name, sorted(recs.trial_seed)) for m, recs in plan] == [
        ("best_val_acc", [0, 1]), ("oracle", [1]), ("last", [2])]
    assert [(m.name, len(recs)) for m, recs in selection.plan(collection.records, "last,oracle",
                                                              "best_val_wga")] == [
        ("last", 3), ("oracle", 3)]


def test_methods_needing_validation_are_not_applicable_without_it(tmp_path):
    for h in (0, 1):  # two draws: even "last" needs a validation split to choose between them
        write_run(tmp_path, [record(s, dataset=MC, hparams_seed=h, test=0.5 + 0.1 * h)
                             for s in (1, 2)])
    records = reader.read_runs([tmp_path]).records
    for name in ("last", "best_val_acc", "best_val_wga", "best_val_mean_aa_wga",
                 "training_domain_val"):
        sel = selection.select(records, METHODS[name])
        assert sel.runs.empty and len(sel.not_applicable) == 1
        assert "validation split" in sel.not_applicable[0].reason
    oracle = selection.select(records, METHODS["oracle"]).runs
    assert list(oracle.hparams_seed) == [1] and list(oracle.ood_acc) == [0.6]


def test_last_needs_no_validation_with_a_single_draw(tmp_path):
    write_run(tmp_path, [record(s, dataset=MC, test=0.1 * s) for s in (1, 2, 3)])
    chosen = selection.select(reader.read_runs([tmp_path]).records, METHODS["last"]).runs
    assert list(chosen.step) == [3] and chosen.ood_acc.iloc[0] == pytest.approx(0.3)


# -- statistics and aggregation --------------------------------------------------------------
def test_t_quantiles_and_summary():
    assert stats.t975(1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t975(2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t975(40) == pytest.approx(2.0211, abs=1e-4)  # beyond the table
    assert stats.t975(120) == pytest.approx(1.9799, abs=1e-4)
    s = stats.summarize([80.0, 90.0, 70.0, math.nan])  # NaN (missing metric) is left out
    assert (s.mean, s.std, s.n) == (pytest.approx(80.0), pytest.approx(10.0), 3)
    assert s.ci95 == pytest.approx(4.3027 * 10 / math.sqrt(3), abs=1e-3)
    one = stats.summarize([0.5])
    assert one.n == 1 and math.isnan(one.std) and math.isnan(one.ci95)


def three_seed_dir(root: Path, id_accs=(0.95, 0.96, 0.97), ood=(0.8, 0.9, 0.7)) -> Path:
    for t, (i, o) in enumerate(zip(id_accs, ood)):
        write_run(root, [record(1, dataset=MC, trial_seed=t, test_id=i, test=o)])
        write_run(root, [record(1, dataset=MC, algorithm="DL", trial_seed=t,
                                hparams={"dl_lambda": 1.25}, test_id=0.9, test=0.5)])
    return root


def aggregate(root: Path, method="last", exclude_dead=False, metrics="id_acc,ood_acc,wga"):
    records = reader.read_runs([root]).records
    sel = selection.select(records, METHODS[method])
    return tables.aggregate(sel, tables.parse_metrics(metrics), exclude_dead)


def test_aggregate_mean_std_ci_in_percent(tmp_path):
    agg = aggregate(three_seed_dir(tmp_path)).set_index("algorithm")
    erm = agg.loc["ERM"]
    assert (erm.ood_acc_mean, erm.ood_acc_std, erm.n) == (pytest.approx(80.0), pytest.approx(10.0), 3)
    assert erm.ood_acc_ci95 == pytest.approx(24.84, abs=0.01)
    assert erm.wga_n == 0  # MNIST-CIFAR's OOD split has no groups
    assert tables.stat_text(erm, "ood_acc", ci=False) == "80.0 ± 10.0"
    assert tables.stat_text(erm, "ood_acc", ci=True) == "80.0 [55.2, 100.0]"  # clipped
    assert agg.loc["DL", "hp:dl_lambda"] == 1.25 and math.isnan(erm["hp:dl_lambda"])


def test_dead_runs_are_counted_and_can_be_excluded(tmp_path):
    root = three_seed_dir(tmp_path, id_accs=(0.10, 0.95, 0.97), ood=(0.1, 0.6, 0.8))
    kept = aggregate(root).set_index("algorithm").loc["ERM"]
    assert (kept.dead, kept.n, kept.ood_acc_mean) == (1, 3, pytest.approx(50.0))
    excluded = aggregate(root, exclude_dead=True).set_index("algorithm").loc["ERM"]
    assert (excluded.dead, excluded.n, excluded.ood_acc_mean) == (1, 2, pytest.approx(70.0))


# -- output formats --------------------------------------------------------------------------
def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["collect", *map(str, argv)])
    return code, out.getvalue(), err.getvalue()


def test_markdown_has_cells_grid_columns_definitions_and_na(tmp_path):
    code, out, _ = run_cli(three_seed_dir(tmp_path), "--selection", "last,best_val_wga")
    assert code == 0
    assert "| algorithm   | dl_lambda   | ID acc     | OOD acc (AA)   | n   | dead   |" in out
    assert "| DL          | 1.25        | 90.0 ± 0.0 | 50.0 ± 0.0     | 3   | 0      |" in out
    assert "| ERM         | –           | 96.0 ± 1.0 | 80.0 ± 10.0    | 3   | 0      |" in out
    assert "AA (average accuracy): the sample mean" in out
    assert "WGA (worst-group accuracy)" not in out  # defined only under tables that show it
    assert "OOD acc (AA) = AA on test_ood" in out
    assert "not applicable: needs a validation split with group labels (mnist_cifar)" in out
    assert "| WGA" not in out  # the dataset has no WGA column
    assert "skipped: nothing" in out


def test_definitions_name_the_split_of_every_row(tmp_path):
    """Where rows of a table (or datasets of a summary) evaluate on different splits, the line
    under the table names each split with the rows it serves; the first row's split is not all."""
    variants = [{**TOY, "args": {"variant": "a"}},
                {**TOY, "args": {"variant": "b"}, "ood_split": "official_test"},
                {**TOY, "args": {"variant": "c"}}]
    for dataset in (*variants, MC):
        write_run(tmp_path, [record(1, dataset=dataset, val=(0.8, 0.6), test=(0.7, 0.5))])
    code, out, _ = run_cli(tmp_path, "--selection", "last", "--summary-metric", "ood_acc")
    assert code == 0
    assert ("OOD acc (AA) = AA on test (variant=a; variant=c), official_test (variant=b); "
            "WGA = WGA on test (variant=a; variant=c), official_test (variant=b)") in out
    assert "ID acc = AA on test_id;" in out  # the same split in every row: named once
    summary = out[out.index("## Summary: OOD acc (AA)"):]
    assert ("OOD acc (AA) = AA on test_ood (dataset=mnist_cifar, n_backgrounds=8), "
            "test (dataset=toy, variant=a; dataset=toy, variant=c), "
            "official_test (dataset=toy, variant=b).") in summary


def test_latex_and_csv(tmp_path):
    root = three_seed_dir(tmp_path)
    code, latex, _ = run_cli(root, "--format", "latex", "--ci")
    assert code == 0
    assert "\\toprule" in latex and "80.0 [55.2, 100.0]" in latex
    assert "\\section*{Selection: last" in latex and "mnist\\_cifar" in latex
    assert "dl\\_lambda" in latex and "AA (average accuracy)" in latex
    out = tmp_path / "tables" / "all.csv"
    code, stdout, err = run_cli(root, "--format", "csv", "--selection", "last,oracle,best_val_acc",
                                "--output", out)
    assert code == 0 and stdout == "" and "skipped: nothing" in err
    table = pd.read_csv(out)
    erm = table[(table.selection == "last") & (table.algorithm == "ERM")].iloc[0]
    assert (erm.ood_acc_mean, erm.ood_acc_std, erm.n, erm.dead) == (80.0, 10.0, 3, 0)
    na = table[table.selection == "best_val_acc"]
    assert len(na) == 2 and na.note.str.contains("not applicable").all()


def test_markdown_matches_golden(sweep_dir):
    records = reader.read_runs([sweep_dir]).records
    metrics = tables.parse_metrics("id_acc,ood_acc,wga,acc_adj")
    sections = []
    for method in selection.parse_methods("best_val_wga,oracle"):
        sel = selection.select(records, method)
        sections.append(tables.Section(sel, tables.aggregate(sel, metrics, False)))
    text = tables.render(sections, tables.MARKDOWN, metrics, metrics[1:3], False, False, "footer")
    assert text == (GOLDEN / "collect_selection.md").read_text()


# -- robustness ------------------------------------------------------------------------------
def test_broken_trees_are_counted_not_fatal(tmp_path):
    good = write_run(tmp_path / "a", [record(s, val=(0.8, 0.5), test=(0.7, 0.4)) for s in (1, 2)])
    write_run(tmp_path / "a", [record(1, trial_seed=1, val=(0.8, 0.5), test=(0.7, 0.4))],
              done=False)
    empty = tmp_path / "a" / "empty_run"
    empty.mkdir()
    (empty / RESULTS).write_bytes(b"")
    (empty / DONE).write_text("done\n")
    binary = tmp_path / "a" / "binary_run"
    binary.mkdir()
    (binary / RESULTS).write_bytes(bytes(range(256)) * 4)
    (binary / DONE).write_text("done\n")
    torn = write_run(tmp_path / "b", [record(s, trial_seed=2, val=(0.8, 0.5), test=(0.6, 0.3))
                                      for s in (1, 2)])
    with open(torn / RESULTS, "ab") as f:  # a foreign JSON line, a corrupt one, a torn tail
        f.write(b'{"hello": 1}\n\xff\xfe not json\n{"args": {"dataset": "to')
    (tmp_path / "b" / "notes.jsonl").write_text('{"note": "not a run"}\n')
    (tmp_path / "b" / "weights.bin").write_bytes(bytes(range(256)))
    (tmp_path / "b" / "copy").mkdir()
    write_run(tmp_path / "b" / "copy", json_lines(good / RESULTS))  # same args as `good`

    collection = reader.read_runs([tmp_path])
    s = collection.skipped
    assert collection.records["run"].nunique() == 2 and len(collection.records) == 4
    assert len(s.not_done) == 1 and sorted(s.unreadable) == ["binary_run", "empty_run"]
    assert len(s.duplicates) == 1 and [Path(p).name for p in s.foreign_files] == ["notes.jsonl"]
    assert s.corrupt_lines == {torn.name: 2} and s.foreign_lines == {torn.name: 1}
    line = s.summary()
    assert line.startswith("skipped: 1 run without done (")
    assert "2 finished runs with no readable record (binary_run, empty_run)" in line
    assert "2 corrupt lines" in line and "1 foreign line" in line and "1 foreign file" in line

    code, out, _ = run_cli(tmp_path, "--selection", "best_val_wga")
    assert code == 0 and "| ERM" in out and "2 corrupt lines" in out


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_user_errors(tmp_path, capsys):
    assert main(["collect", str(tmp_path / "missing")]) == 2
    assert main(["collect", str(tmp_path)]) == 2  # no finished run
    assert "no finished run" in capsys.readouterr().err
    three_seed_dir(tmp_path)
    assert main(["collect", str(tmp_path), "--selection", "best_guess"]) == 2
    assert "known: last" in capsys.readouterr().err
    assert main(["collect", str(tmp_path), "--metric", "auc"]) == 2
    assert main(["collect", str(tmp_path), "--patience", "0"]) == 2
    assert main(["collect", str(tmp_path), "--plots", str(tmp_path / "p"), "--plot-kinds", "3d"]) == 2


# -- plots -----------------------------------------------------------------------------------
def test_plots_ood_vs_n_and_vs_lambda(tmp_path):
    runs = tmp_path / "runs"
    for n in (1, 8, 64):
        ds = {**TOY, "args": {"n_backgrounds": n}}
        for t in (0, 1):
            write_run(runs, [record(1, dataset=ds, trial_seed=t, val=(0.9, 0.5),
                                    test=(0.3 + 0.005 * n + 0.01 * t, 0.1))])
            for lam in (0.5, 1.25):
                write_run(runs, [record(1, dataset=ds, algorithm="DL", trial_seed=t,
                                        hparams={"dl_lambda": lam}, val=(0.9, 0.5),
                                        test=(0.4 + 0.005 * n + 0.1 * lam, 0.2))])
    out = tmp_path / "plots"
    code, _, err = run_cli(runs, "--selection", "last", "--metric", "ood_acc",
                           "--plots", out, "--plot-kinds", "sweep")
    assert code == 0 and "wrote 4 plot files" in err
    # OOD vs N (lines: ERM, DL λ=0.5, DL λ=1.25) and OOD vs λ (ERM as a reference line per N)
    for stem in ("last-toy-ood_acc-vs-n_backgrounds", "last-toy-ood_acc-vs-dl_lambda"):
        for ext in plots.FORMATS:
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    assert len(list(out.iterdir())) == 4


def test_group_heatmap_files(tmp_path):
    write_run(tmp_path, [record(1, val=(0.9, 0.5), test=(0.7, 0.4))])
    runs = reader.read_runs([tmp_path]).records
    paths = plots.group_heatmap(runs, "ood", tmp_path / "plots" / "groups")
    assert [p.name for p in paths] == ["groups.png", "groups.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_group_accuracy_matrix_averages_runs():
    runs = pd.DataFrame({"num_classes": [2, 2], "num_attributes": [2, 2],
                         "ood_group_acc": [{"0": 1.0, "3": 0.5}, {"0": 0.5, "1": 0.2}]})
    m = plots.group_accuracy_matrix(runs, "ood")
    assert m[0, 0] == pytest.approx(75.0) and m[0, 1] == pytest.approx(20.0)
    assert math.isnan(m[1, 0]) and m[1, 1] == pytest.approx(50.0)


# -- real runs -------------------------------------------------------------------------------
def test_collects_real_toy_runs(run_toy, tmp_path):
    for t in (0, 1):  # 4 steps, evaluated every 2: two records per run
        short = {"trial_seed": t, "epochs": None, "steps": 4, "checkpoint_freq": 2}
        run_toy(name=f"runs/adam_t{t}", **short)
        run_toy(name=f"runs/sgd_t{t}", hparams={"optimizer": "sgd"}, **short)
    code, out, _ = run_cli(tmp_path / "runs", "--selection", "best_val_wga,oracle", "--ci")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ERM")]
    assert len(rows) == 4  # 2 optimizer cells × 2 methods, each with n = 2 runs
    assert all("| 2 " in row and "[" in row for row in rows)
    assert "Collected 4 finished runs (8 checkpoint records)" in out


def test_default_is_one_selection_with_definitions_once_and_all_shows_every_method(tmp_path):
    """No sweep file names a selection: the first default alone; its tables (a dataset table
    and a summary across datasets) define each metric and the cells once."""
    for dataset in ({**TOY, "args": {"variant": "a"}}, {**TOY, "args": {"variant": "b"}}):
        write_run(tmp_path, [record(1, dataset=dataset, val=(0.8, 0.6), test=(0.7, 0.5))])
    code, out, _ = run_cli(tmp_path)
    assert code == 0
    assert re.findall(r"^# Selection: (\S+)", out, re.M) == ["last"]
    assert "## Summary: WGA" in out and out.count("WGA (worst-group accuracy): the minimum") == 1
    assert out.count("Cells: mean ± std") == 1 and out.count("WGA = WGA on test") == 2
    assert "`--selection all` shows every method" in out
    code, out, _ = run_cli(tmp_path, "--selection", "all")
    assert code == 0
    assert re.findall(r"^# Selection: (\S+)", out, re.M) == list(METHODS)
    assert "not applicable" not in out.split("# Selection: ")[1]  # last applies to every run
