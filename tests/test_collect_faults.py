"""The collector's blind spots: finished runs without results, repeated steps, records of another
run, diverged runs, null metrics, integer CSV columns next to NaN, clipped intervals, and
unambiguous directory names."""
from __future__ import annotations

import io
import json
import re

import pandas as pd

from domainbed_sc.cli import main
from domainbed_sc.collect import reader
from domainbed_sc.training.records import DONE, RESULTS, RunArgs
from test_collect import MC, TOY, record, write_run


def collect(capsys, *argv) -> str:
    assert main(["collect", *map(str, argv)]) == 0
    return capsys.readouterr().out


def test_done_without_results_is_listed(tmp_path):
    write_run(tmp_path, [record(s, val=(0.8, 0.5), test=(0.7, 0.4)) for s in (1, 2)])
    lost = tmp_path / "lost_run"
    lost.mkdir()
    (lost / DONE).write_text("done\n")
    skipped = reader.read_runs([tmp_path]).skipped
    assert skipped.unreadable == ["lost_run"]
    assert "1 finished run with no readable record (lost_run)" in skipped.summary()


def test_repeated_steps_and_foreign_records_are_left_out_and_counted(tmp_path):
    own = [record(s, val=(0.8, 0.5), test=(0.7, 0.4)) for s in (1, 2, 3)]
    stranger = record(2, trial_seed=9, val=(0.1, 0.1), test=(0.1, 0.1))  # another run's args
    again = record(2, val=(0.2, 0.2), test=(0.2, 0.2))  # step 2 a second time
    run = write_run(tmp_path, [own[0], own[1], stranger, again, own[2]])
    collection = reader.read_runs([tmp_path])
    rows = collection.records
    assert rows["step"].tolist() == [1, 2, 3] and rows["trial_seed"].eq(0).all()
    assert rows.loc[rows["step"] == 2, "val_acc"].item() == 0.8  # the first record of the step
    s = collection.skipped
    assert s.foreign_records == {run.name: 1} and s.repeated_steps == {run.name: 1}
    line = s.summary()
    assert "1 record of another run (in " in line and "1 repeated step (in " in line


def test_the_directory_hash_names_the_run_even_when_outnumbered(tmp_path):
    own = record(1, val=(0.8, 0.5), test=(0.7, 0.4))
    others = [record(s, trial_seed=5, val=(0.1, 0.1), test=(0.1, 0.1)) for s in (1, 2)]
    run = write_run(tmp_path, [own], name=RunArgs(**own["args"]).dir_name())
    with open(run / RESULTS, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in others))
    collection = reader.read_runs([tmp_path])
    assert collection.records["trial_seed"].tolist() == [0]
    assert collection.skipped.foreign_records == {run.name: 2}


def test_diverged_runs_are_listed_with_their_step_and_left_out(tmp_path, capsys):
    write_run(tmp_path, [record(s, val=(0.8, 0.5), test=(0.7, 0.4)) for s in (1, 2)])
    bad = write_run(tmp_path, [record(1, trial_seed=1, val=(0.9, 0.9), test=(0.9, 0.9))], done=False)
    (bad / "diverged").write_text(json.dumps({"step": 40, "losses": {"loss": None}}))
    also = write_run(tmp_path, [record(1, trial_seed=2, val=(0.9, 0.9), test=(0.9, 0.9))])
    (also / "diverged").write_text("{torn")  # done and diverged: still out
    collection = reader.read_runs([tmp_path])
    assert collection.records["trial_seed"].unique().tolist() == [0]
    assert sorted(collection.skipped.diverged) == sorted([f"{bad} (step 40)", str(also)])
    assert collection.skipped.not_done == []  # not counted twice
    out = collect(capsys, tmp_path, "--selection", "last")
    assert f"diverged (not in the tables): 2 runs (" in out and f"{bad} (step 40)" in out
    assert "| 70.0 " in out  # the table holds the good run alone: OOD acc 70.0 (n=1)


def null_record(step, **kw):
    rec = record(step, **kw)
    for m in rec["metrics"].values():  # strict JSON: NaN written as null
        m.update({"wga": None, "acc_gmean": None, "group_acc": {"0": m["acc"], "3": None}})
    rec["epoch"], rec["wall_time"] = None, None
    return rec


def test_null_metrics_read_as_nan(tmp_path, capsys):
    for t in (0, 1):
        write_run(tmp_path, [null_record(s, trial_seed=t, val=(0.8, 0.5), test=(0.7, 0.4))
                             for s in (1, 2)])
    rows = reader.read_runs([tmp_path]).records
    assert len(rows) == 4 and rows["ood_wga"].isna().all() and rows["epoch"].isna().all()
    assert rows["ood_group_acc"].iloc[0] == {"0": 0.7}
    out = collect(capsys, tmp_path, "--selection", "best_val_acc,last", "--plots", tmp_path / "p")
    assert "| ERM" in out and "70.0 ± 0.0" in out


def test_csv_integer_columns_stay_integers_beside_nan(tmp_path, capsys):
    write_run(tmp_path, [record(s, val=(0.8, 0.5), test=(0.7, 0.4)) for s in (1, 2)])
    write_run(tmp_path, [record(2, dataset=MC, val=None, test=0.6)])  # no val: n/a rows, NaN
    out = collect(capsys, tmp_path, "--format", "csv", "--selection", "last,best_val_acc")
    table = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    for col in ("n", "dead", "hparams_seed", "draws", "ood_acc_n", "arg:n_backgrounds"):
        assert not table[col].str.endswith(".0").any(), (col, table[col].tolist())
    assert "" in set(table["n"]) and "1" in set(table["n"])  # NaN beside integers
    assert set(table["arg:n_backgrounds"]) == {"", "8"}


def test_ci_bounds_are_clipped_to_0_100_and_said_so(tmp_path, capsys):
    for t, acc in enumerate((0.02, 0.04, 0.30)):  # mean 12 %, half-width 40: bound would be < 0
        write_run(tmp_path, [record(1, trial_seed=t, test_id=0.9, val=(0.5, 0.5), test=(acc, acc))])
    out = collect(capsys, tmp_path, "--selection", "last", "--ci", "--metric", "ood_acc")
    assert "12.0 [0.0, " in out and "[-" not in out
    assert "clipped to [0, 100]" in out


def test_ci_upper_bound_is_clipped_too(tmp_path, capsys):
    for t, acc in enumerate((0.99, 0.70, 0.99)):  # mean 89.3 %, half-width 36
        write_run(tmp_path, [record(1, trial_seed=t, val=(0.5, 0.5), test=(acc, acc))])
    out = collect(capsys, tmp_path, "--selection", "last", "--ci", "--metric", "ood_acc")
    uppers = [float(x) for x in re.findall(r"\[\d+\.\d, (\d+\.\d)\]", out)]
    assert uppers and max(uppers) == 100.0


def test_dir_names_keep_the_sign_of_exponents():
    big = RunArgs("toy", "ERM", hparams={"lr": 1e30})
    small = RunArgs("toy", "ERM", hparams={"lr": 1e-30})
    assert "lr1ep30" in big.readable_name() and "lr1e-30" in small.readable_name()
    assert big.readable_name() != small.readable_name()
    assert big.dir_name().endswith("-" + big.run_id())  # the hash part is unchanged
