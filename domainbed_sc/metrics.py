"""The metric registry (docs/METHODS.md §P.3): every per-split metric a checkpoint records, one
``@register_metric`` class each, in the manner of WILDS' ``common/metrics/metric.py`` (Koh et al.
2021): the class computes the metric from a split's predictions and declares everything the
rest of the suite reads about it.

- its name: the field in a record's ``metrics[split]`` (evaluation writes it, the reader reads
  ``<role>_<name>`` for each split role);
- ``title`` and ``definition``: the text printed under every table that shows it;
- ``higher_is_better``: the direction (selection by a metric and the definitions read it);
- ``needs_groups``: computed only on splits with group labels (else absent from the record);
- ``columns``: the table columns ``collect --metric`` offers, each a split role, a key and a
  header label.

A new metric is one class here.  This module imports neither torch nor pandas: the command line
builds its help from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .registry import Registry

if TYPE_CHECKING:
    from .training.predictions import Predictions

#: expected calibration error: equal-width confidence bins (Guo et al. 2017; METHODS §P.3)
ECE_BINS = 15


@dataclass(frozen=True)
class Column:
    """A table column: ``metric`` measured on the split playing ``role`` (collect.reader.ROLES)."""

    role: str
    key: str  # the name ``collect --metric`` takes
    label: str  # the table header
    metric: type["Metric"]

    @property
    def column(self) -> str:
        """The reader's column of the value."""
        return f"{self.role}_{self.metric.name}"


class Metric:
    name: ClassVar[str]  # set by register_metric: the record field
    title: ClassVar[str]
    definition: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    needs_groups: ClassVar[bool] = False
    columns: ClassVar[tuple[tuple[str, str, str], ...]]  # (role, key, label)

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        raise NotImplementedError

    @classmethod
    def short(cls) -> str:
        """The title's name alone: "AA" of "AA (average accuracy)"."""
        return cls.title.split(" (")[0]

    @classmethod
    def describe(cls) -> str:
        direction = "" if cls.higher_is_better else " Lower is better."
        return f"{cls.title}: {cls.definition}.{direction}"


METRICS: Registry[type[Metric]] = Registry("metric")
register_metric = METRICS.register


@register_metric("acc")
class Accuracy(Metric):
    title = "AA (average accuracy)"
    definition = "the sample mean of correct predictions over a split"
    columns = (("id", "id_acc", "ID acc"), ("ood", "ood_acc", "OOD acc (AA)"),
               ("val", "val_acc", "val acc"))

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        return p.correct.mean().item()


@register_metric("wga")
class WorstGroupAccuracy(Metric):
    title = "WGA (worst-group accuracy)"
    definition = ("the minimum, over the split's non-empty groups g = (y, s), of the group's "
                  "accuracy")
    needs_groups = True
    columns = (("ood", "wga", "WGA"), ("id", "id_wga", "ID WGA"), ("val", "val_wga", "val WGA"))

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        return p.groups.acc.min().item()


@register_metric("acc_gmean")
class GroupMeanAccuracy(Metric):
    title = "acc_gmean (group-mean accuracy)"
    definition = "the unweighted mean of the accuracies of the split's non-empty groups"
    needs_groups = True
    columns = (("ood", "acc_gmean", "acc_gmean"),)

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        return p.groups.acc.mean().item()


@register_metric("acc_adj")
class AdjustedAccuracy(Metric):
    title = "acc_adj (adjusted average accuracy)"
    definition = ("the split's group accuracies weighted by the training split's group "
                  "frequencies (GroupDRO / WILDS)")
    needs_groups = True
    columns = (("ood", "acc_adj", "acc_adj"),)

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        weights = p.groups.train_n
        total = weights.sum().item()
        return (p.groups.acc * weights).sum().item() / total if total > 0 else None


@register_metric("worst_class_acc")
class WorstClassAccuracy(Metric):
    title = "worst-class acc"
    definition = ("the minimum, over the classes present in the split, of the class's recall "
                  "(needs no attribute labels)")
    columns = (("ood", "worst_class_acc", "worst-class acc"),
               ("val", "val_worst_class_acc", "val worst-class acc"))

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        return p.class_recall.min().item()


@register_metric("balanced_acc")
class BalancedAccuracy(Metric):
    title = "balanced acc"
    definition = "the mean, over the classes present in the split, of the class's recall"
    columns = (("ood", "balanced_acc", "balanced acc"),)

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        return p.class_recall.mean().item()


@register_metric("macro_f1")
class MacroF1(Metric):
    title = "macro-F1"
    definition = ("the unweighted mean of the per-class F1 scores over the classes present in "
                  "the split's labels or predictions")
    columns = (("ood", "macro_f1", "macro-F1"),)

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        return p.class_f1.mean().item()


@register_metric("ece")
class ExpectedCalibrationError(Metric):
    title = "ECE (expected calibration error)"
    definition = (f"Σ_b (n_b / n)·|acc_b − conf_b| over {ECE_BINS} equal-width bins of the "
                  f"top-class softmax probability (Guo et al. 2017)")
    higher_is_better = False
    columns = (("ood", "ece", "ECE"), ("id", "id_ece", "ID ECE"))

    @staticmethod
    def compute(p: "Predictions") -> float | None:
        return p.ece(ECE_BINS)


def columns() -> dict[str, Column]:
    """Every table column the registered metrics offer, by key."""
    return {key: Column(role, key, label, m)
            for m in METRICS.values() for role, key, label in m.columns}
