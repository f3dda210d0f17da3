"""Model selection (docs/METHODS.md §P.4): which checkpoint of each run, which hyperparameter draw.

Two stages, as in DomainBed.  A method scores every checkpoint record of a run and keeps the
best one (the earliest on ties); only checkpoints of a method's final stage are candidates
(METHODS §P.4, §C.27: JTT's stage-2 model, Chroma-VAE's z2-classifier, the models their papers
report). Then, per grid cell (dataset, dataset args, algorithm, fixed hparam overrides, training
length), it averages the kept checkpoints' hparams score over the trial seeds of each hparams
draw and keeps the best draw (the lowest hparams_seed on ties), so every trial seed of a cell
reports the same hyperparameters (the suite's default, shared search).  Runs with DomainBed's
search (``hparams_per_trial``: each trial seed drew its own hparams) are chosen as DomainBed's
``SelectionMethod.hparams_accs`` does, per (cell, trial seed): the draw best by that trial
seed's own score, so each trial seed reports its own draw.  A method whose score a dataset
cannot give (no validation split, no group labels on it) is "not applicable" there.  The
methods themselves are the entries of ``collect/methods.py``'s registry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .methods import METHODS, Method, parse_methods


@dataclass(frozen=True)
class EarlyStopping:
    """Early stopping replayed on the records (eX2L, METHODS §A.7, §C.2): a run is cut once
    ``patience`` epochs (the records' ``epoch``, whatever the evaluation frequency) pass without
    a gain above ``min_delta`` in the checkpoint score, and its best checkpoint is chosen among
    those it evaluated."""

    patience: float
    min_delta: float = 1e-4

    def stop_index(self, values, epochs) -> int:
        best, since = -math.inf, None
        for i, (v, epoch) in enumerate(zip(values, epochs)):
            if v > best + self.min_delta:  # NaN never improves
                best, since = v, epoch
            elif since is None:  # no score yet: count from the first evaluation
                since = epoch
            if epoch - since >= self.patience:
                return i
        return len(values) - 1

    def evaluated(self, score: pd.Series, records: pd.DataFrame) -> pd.Series:
        """True for the checkpoints each run evaluated before stopping (records in step order)."""
        keep = pd.Series(True, index=score.index)
        for _, run_score in score.groupby(records["run"], sort=False):
            epochs = records.loc[run_score.index, "epoch"].to_numpy()
            keep[run_score.index[self.stop_index(run_score.to_numpy(), epochs) + 1:]] = False
        return keep

    def describe(self) -> str:
        return (f"Early stopping replayed: a run stops once {self.patience:g} epochs pass without "
                f"a gain above {self.min_delta:g} in the checkpoint score.")


#: ``--selection all``: every registered method, over every run
ALL = "all"


def plan(records: pd.DataFrame, text: str | None, default: str) -> list[tuple[Method, pd.DataFrame]]:
    """(method, the records it selects among).  With ``text`` (--selection): every method named
    (``all``: every registered one) over every run.  Without it, each run gets the methods its
    sweep file names (``default`` where none names any), and each method is shown over the runs
    that get it: runs of sweeps that name different selections are each shown under their own
    (METHODS §P.4: each paper its own)."""
    if text is not None:
        return [(m, records) for m in parse_methods(",".join(METHODS) if text == ALL else text)]
    wanted = records["sweep_selection"].where(records["sweep_selection"] != "", default).str.split(",")
    order = dict.fromkeys(name for names in wanted for name in names)
    return [(m, records[wanted.map(lambda names, n=name: n in names)])
            for name in order for m in parse_methods(name)]


@dataclass
class NotApplicable:
    cell: pd.Series  # the cell's first record, for its labels
    reason: str


@dataclass
class Selected:
    method: Method
    stopping: EarlyStopping | None
    runs: pd.DataFrame  # the kept checkpoint of each run of each cell's chosen draw; + "draws"
    all_draws: pd.DataFrame  # the kept checkpoint of every run
    not_applicable: list[NotApplicable] = field(default_factory=list)

    def describe(self) -> str:
        stops = self.stopping is not None and self.method.stops_early
        searches = self.all_draws["hparams_per_trial"] if len(self.all_draws) else (False,)
        return self.method.describe(searches) + (" " + self.stopping.describe() if stops else "")


def final_stage(records: pd.DataFrame) -> pd.DataFrame:
    """The checkpoints of each run's final stage, the model its method reports (METHODS §P.4)."""
    return records[records["stage"] == records["num_stages"]]


def best_checkpoints(records: pd.DataFrame, method: Method,
                     stopping: EarlyStopping | None = None) -> pd.DataFrame:
    """One final-stage record per run: the one maximising the method's checkpoint score (NaN:
    none); ``fallback`` marks those where the method fell back to its second choice."""
    records = final_stage(records)
    score = method.checkpoint(records)
    valid = score.notna()
    if stopping is not None and method.stops_early:
        valid &= stopping.evaluated(score, records)
    # records are sorted by (run, step), so idxmax's first maximum is the earliest checkpoint
    best = records.loc[score[valid].groupby(records.loc[valid, "run"]).idxmax().to_numpy()]
    return best.assign(fallback=method.fell_back(best) if method.fell_back else False)


def select(records: pd.DataFrame, method: Method,
           stopping: EarlyStopping | None = None) -> Selected:
    """Each cell's chosen draw: one for the cell, or one per trial seed for per-trial cells."""
    kept = best_checkpoints(records, method, stopping)
    out = Selected(method, stopping, records.iloc[:0].assign(draws=0), kept)
    chosen = []
    for cell, cell_records in records.groupby("cell", sort=False):
        picked = kept[kept["cell"] == cell]
        groups = [(cell_records, picked)]
        if cell_records["hparams_per_trial"].iloc[0]:  # the cell hash holds the search
            groups = [(seed_records, picked[picked["trial_seed"] == seed])
                      for seed, seed_records in cell_records.groupby("trial_seed")]
        results = [choose(group, group_picked, method) for group, group_picked in groups]
        runs = [r for r in results if isinstance(r, pd.DataFrame)]
        chosen += runs  # a trial seed that cannot choose is left out (n counts the rest)
        if not runs:
            out.not_applicable.append(results[0])
    if chosen:
        out.runs = pd.concat(chosen)
    return out


def choose(records: pd.DataFrame, picked: pd.DataFrame, method: Method) -> pd.DataFrame | NotApplicable:
    """The kept runs (``picked``) of the best of the draws in ``records``, by their mean hparams
    score (the lowest hparams_seed on ties), with ``draws``: how many there were."""
    draws = records["hparams_seed"].nunique()
    if picked.empty:
        return NotApplicable(records.iloc[0], f"needs {method.needs}")
    means = method.hparams(picked).groupby(picked["hparams_seed"]).mean()
    if draws > 1 and means.isna().all():
        return NotApplicable(records.iloc[0], f"needs {method.needs} to choose among {draws} hparams draws")
    best = means.idxmax() if draws > 1 else picked["hparams_seed"].iloc[0]
    return picked[picked["hparams_seed"] == best].assign(draws=draws)
