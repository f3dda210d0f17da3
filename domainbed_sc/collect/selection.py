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
cannot give (no validation split, no group labels on it) is "not applicable" there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

import numpy as np
import pandas as pd

from ..errors import UserError

Score = Callable[[pd.DataFrame], pd.Series]


def column(name: str) -> Score:
    return lambda df: df[name].astype(float)


def mean_aa_wga(df: pd.DataFrame) -> pd.Series:
    """eX2L's checkpoint criterion J = (AA + WGA) / 2 on the validation split."""
    return (df["val_acc"] + df["val_wga"]) / 2


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    checkpoint: Score  # maximised over a run's checkpoints
    hparams: Score  # averaged over trial seeds (per trial seed: see select), maximised over draws
    checkpoint_doc: str
    hparams_doc: str
    needs: str  # what a dataset must have, for the not-applicable message
    stops_early: bool = True  # False where the checkpoint is the last one anyway
    # per kept checkpoint: True where the method fell back to its second choice, and the note
    fell_back: Callable[[pd.DataFrame], pd.Series] | None = None
    fallback_doc: str = ""

    def describe(self, searches: Iterable[bool] = (False,)) -> str:
        """``searches``: the ``hparams_per_trial`` values of the runs described."""
        hparams = "; ".join(SEARCH_DOC[s].format(self.hparams_doc) for s in sorted(set(searches)))
        return f"Checkpoint: {self.checkpoint_doc}. Hyperparameters: {hparams}."


#: how a cell's draw is chosen, by ``hparams_per_trial``
SEARCH_DOC = {
    False: "per grid cell, the draw with the best {}, averaged over trial seeds (same draw for all seeds)",
    True: "per grid cell and trial seed, the draw with the best {} of that trial seed's run "
          "(DomainBed's search: each trial seed drew its own hyperparameters)",
}


def first_reaching(threshold: float) -> Score:
    """RCL's early stopping (METHODS §P.4, §A.8): the first checkpoint whose val acc reaches
    ``threshold``.  The paper stops training there and says no more, so a run that never gets
    there trains to its end and reports its last checkpoint (our reading); tables count those."""

    def score(df: pd.DataFrame) -> pd.Series:
        acc, step = df["val_acc"].astype(float), df["step"].astype(float)
        # reached: -step (the earliest is the maximum), else step - 1e15 (the last, below any)
        return pd.Series(np.where(acc >= threshold, -step, step - 1e15), df.index).where(acc.notna())

    return score


def early_stop_at(threshold: float) -> Method:
    pct = f"{threshold * 100:g} %"
    return Method(
        "early_stop_val_acc" + ("" if threshold == 0.95 else f"@{threshold:g}"),
        f"early stopping at val acc ≥ {pct} (RCL)", first_reaching(threshold), column("val_acc"),
        f"the first whose validation accuracy reaches {pct}, else the last",
        "validation accuracy", _VAL, stops_early=False,
        fell_back=lambda df: df["val_acc"].astype(float) < threshold,
        fallback_doc=f"never reached val acc ≥ {pct} report their last checkpoint")


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


_VAL = "a validation split"
_VAL_GROUPS = "a validation split with group labels"
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("last", "last checkpoint", column("step"), column("val_acc"),
           "the last of each run", "validation accuracy at that checkpoint", _VAL,
           stops_early=False),
    Method("best_val_acc", "best validation accuracy", column("val_acc"), column("val_acc"),
           "best validation accuracy", "validation accuracy", _VAL),
    Method("best_val_wga", "best validation worst-group accuracy", column("val_wga"),
           column("val_wga"), "best validation WGA", "validation WGA", _VAL_GROUPS),
    Method("best_val_mean_aa_wga", "best validation (AA + WGA) / 2 (eX2L)", mean_aa_wga,
           mean_aa_wga, "best validation (AA + WGA) / 2", "validation (AA + WGA) / 2", _VAL_GROUPS),
    # DomainBed's IIDAccuracySelectionMethod; our val splits are the pooled training-env holdout
    Method("training_domain_val", "training-domain validation (DomainBed)", column("val_acc"),
           column("val_acc"), "best accuracy on the dataset's val_split (training-domain holdout)",
           "val_split accuracy", "a validation split (training-domain holdout)"),
    # DomainBed's OracleSelectionMethod: last checkpoint, hparams by test-domain accuracy
    Method("oracle", "oracle (test-set selection)", column("step"), column("oracle_acc"),
           "the last of each run (as DomainBed's oracle)",
           "accuracy on the oracle split (the test/OOD split where the dataset has none)",
           "an oracle or test split", stops_early=False),
    early_stop_at(0.95),
)}
#: methods with a threshold: ``name@value`` (e.g. early_stop_val_acc@0.9)
PARAMETRIC: dict[str, Callable[[float], Method]] = {"early_stop_val_acc": early_stop_at}


T = TypeVar("T")


def parse_names(text: str, known: dict[str, T], kind: str) -> list[T]:
    """The entries of ``known`` named in a comma-separated flag value, in the order given."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UserError(f"unknown {kind}(s) {', '.join(unknown) or '(none given)'}; "
                        f"known: {', '.join(known)}")
    return [known[n] for n in names]


def parse_methods(text: str) -> list[Method]:
    known = dict(METHODS)
    for name in (n.strip() for n in text.split(",")):
        base, sep, value = name.partition("@")
        if sep and base in PARAMETRIC:
            known[name] = PARAMETRIC[base](parse_threshold(value, name))
    return parse_names(text, known, "selection method")


def plan(records: pd.DataFrame, text: str | None, default: str) -> list[tuple[Method, pd.DataFrame]]:
    """(method, the records it selects among).  With ``text`` (--selection): every method over
    every run.  Without it, each run gets the methods its sweep file names (``default`` where
    none names any), and each method is shown over the runs that get it: runs of sweeps that name
    different selections are each shown under their own (METHODS §P.4: each paper its own)."""
    if text is not None:
        return [(m, records) for m in parse_methods(text)]
    wanted = records["sweep_selection"].where(records["sweep_selection"] != "", default).str.split(",")
    order = dict.fromkeys(name for names in wanted for name in names)
    return [(m, records[wanted.map(lambda names, n=name: n in names)])
            for name in order for m in parse_methods(name)]


def parse_threshold(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise UserError(f"selection {name}: the threshold must be a number in (0, 1], got {text!r}")
    return value


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
