"""The selection-method registry (docs/METHODS.md §P.4): one ``Method`` entry per method, which
declares everything the rest reads: its scores, their descriptions, what a dataset must have
for it, whether it stops early, its fallback and, for a method with a threshold, how to make it
at another one (``name@value``).  A new selection method is one entry in ``METHODS``.

Scores read the reader's metric columns (``<role>_<metric>``) in the metric's own direction
(``domainbed_sc.metrics``: ECE is better low).  Only DataFrame methods are used, not pandas
itself: the command line builds its help from this module without loading pandas.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import UserError
from ..metrics import METRICS as METRIC_REGISTRY
from ..registry import Registry, parse_names

if TYPE_CHECKING:
    import pandas as pd

Score = Callable[["pd.DataFrame"], "pd.Series"]


def column(name: str) -> Score:
    return lambda df: df[name].astype(float)


def metric(role: str, name: str) -> Score:
    """A registered metric on the split playing ``role``, signed so that higher is better."""
    sign = 1.0 if METRIC_REGISTRY.get(name).higher_is_better else -1.0
    return lambda df: sign * df[f"{role}_{name}"].astype(float)


def mean_aa_wga(df: "pd.DataFrame") -> "pd.Series":
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
    fell_back: Callable[["pd.DataFrame"], "pd.Series"] | None = None
    fallback_doc: str = ""
    # the method at another threshold (``name@value``); None: the method takes none
    with_threshold: Callable[[float], "Method"] | None = None

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

    def score(df: "pd.DataFrame") -> "pd.Series":
        acc, step = df["val_acc"].astype(float), df["step"].astype(float)
        # reached: -step (the earliest is the maximum), else step - 1e15 (the last, below any)
        return (-step).where(acc >= threshold, step - 1e15).where(acc.notna())

    return score


def early_stop_at(threshold: float) -> Method:
    pct = f"{threshold * 100:g} %"
    return Method(
        "early_stop_val_acc" + ("" if threshold == 0.95 else f"@{threshold:g}"),
        f"early stopping at val acc ≥ {pct} (RCL)", first_reaching(threshold), _VAL_ACC,
        f"the first whose validation accuracy reaches {pct}, else the last",
        "validation accuracy", _VAL, stops_early=False,
        fell_back=lambda df: df["val_acc"].astype(float) < threshold,
        fallback_doc=f"never reached val acc ≥ {pct} report their last checkpoint",
        with_threshold=early_stop_at)


_VAL = "a validation split"
_VAL_GROUPS = "a validation split with group labels"
_VAL_ACC, _VAL_WGA, _VAL_WCA = metric("val", "acc"), metric("val", "wga"), metric("val", "worst_class_acc")
METHODS: Registry[Method] = Registry("selection method")
for _method in (
    Method("last", "last checkpoint", column("step"), _VAL_ACC,
           "the last of each run", "validation accuracy at that checkpoint", _VAL,
           stops_early=False),
    Method("best_val_acc", "best validation accuracy", _VAL_ACC, _VAL_ACC,
           "best validation accuracy", "validation accuracy", _VAL),
    Method("best_val_wga", "best validation worst-group accuracy", _VAL_WGA, _VAL_WGA,
           "best validation WGA", "validation WGA", _VAL_GROUPS),
    Method("best_val_mean_aa_wga", "best validation (AA + WGA) / 2 (eX2L)", mean_aa_wga,
           mean_aa_wga, "best validation (AA + WGA) / 2", "validation (AA + WGA) / 2", _VAL_GROUPS),
    # attribute-free: class labels only, so it applies where validation has no group labels
    Method("worst_class_val", "best validation worst-class accuracy (no attribute labels)",
           _VAL_WCA, _VAL_WCA, "best validation worst-class accuracy",
           "validation worst-class accuracy", _VAL),
    # DomainBed's IIDAccuracySelectionMethod; our val splits are the pooled training-env holdout
    Method("training_domain_val", "training-domain validation (DomainBed)", _VAL_ACC, _VAL_ACC,
           "best accuracy on the dataset's val_split (training-domain holdout)",
           "val_split accuracy", "a validation split (training-domain holdout)"),
    # DomainBed's OracleSelectionMethod: last checkpoint, hparams by test-domain accuracy
    Method("oracle", "oracle (test-set selection)", column("step"), metric("oracle", "acc"),
           "the last of each run (as DomainBed's oracle)",
           "accuracy on the oracle split (the test/OOD split where the dataset has none)",
           "an oracle or test split", stops_early=False),
    early_stop_at(0.95),
):
    METHODS.register(_method.name)(_method)
#: methods with a threshold: ``name@value`` (e.g. early_stop_val_acc@0.9)
PARAMETRIC: dict[str, Callable[[float], Method]] = {
    m.name: m.with_threshold for m in METHODS.values() if m.with_threshold is not None}


def parse_methods(text: str) -> list[Method]:
    known = {name: METHODS[name] for name in METHODS}
    for name in (n.strip() for n in text.split(",")):
        base, sep, value = name.partition("@")
        if sep and base in PARAMETRIC:
            known[name] = PARAMETRIC[base](parse_threshold(value, name))
    return parse_names(text, known, "selection method")


def parse_threshold(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise UserError(f"selection {name}: the threshold must be a number in (0, 1], got {text!r}")
    return value
