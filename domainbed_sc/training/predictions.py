"""What the metrics compute from (``domainbed_sc.metrics``): one split's predictions and labels,
with what several metrics share computed once, as whole-tensor operations.  Its own module so
that the metrics can name it without importing evaluation, which imports them."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass
class GroupAccuracy:
    """Accuracy of each non-empty group (y, s) of a split, with its size and training count."""

    ids: list[int]
    n: Tensor
    acc: Tensor
    train_n: Tensor


@dataclass
class Predictions:
    """One split's predictions and labels: what the metrics compute from (``Metric.compute``),
    with what several of them share computed once, all as whole-tensor operations.  ``probs``:
    the softmax probabilities, where the caller has them (ECE needs them)."""

    pred: Tensor
    y: Tensor
    g: Tensor
    num_groups: int
    train_group_counts: Tensor
    probs: Tensor | None = None

    @cached_property
    def correct(self) -> Tensor:
        return (self.pred == self.y).double()

    @cached_property
    def num_classes(self) -> int:
        """Classes beyond both the labels and the predictions count in no per-class metric."""
        seen = int(max(self.y.max(), self.pred.max())) + 1
        return seen if self.probs is None else max(seen, self.probs.shape[1])

    @cached_property
    def groups(self) -> GroupAccuracy | None:
        known = self.g >= 0
        if not bool(known.any()):
            return None
        g = self.g[known]
        n_g = torch.bincount(g, minlength=self.num_groups).cpu()
        hits = torch.bincount(g, weights=self.correct[known], minlength=self.num_groups).cpu()
        present = n_g > 0
        return GroupAccuracy(present.nonzero().flatten().tolist(), n_g[present],
                             hits[present] / n_g[present],
                             self.train_group_counts.double().cpu()[present])

    @cached_property
    def class_recall(self) -> Tensor:
        """Recall of each class present in the labels (torchmetrics)."""
        from torchmetrics.functional.classification import multiclass_recall  # only when evaluating

        recall = multiclass_recall(self.pred, self.y, self.num_classes, average="none",
                                   validate_args=False)
        return recall[torch.bincount(self.y, minlength=self.num_classes) > 0].double()

    @cached_property
    def class_f1(self) -> Tensor:
        """F1 of each class present in the labels or the predictions (torchmetrics; the classes
        scikit-learn's macro average takes)."""
        from torchmetrics.functional.classification import multiclass_f1_score

        f1 = multiclass_f1_score(self.pred, self.y, self.num_classes, average="none",
                                 validate_args=False)
        seen = torch.bincount(torch.cat([self.y, self.pred]), minlength=self.num_classes) > 0
        return f1[seen].double()

    def ece(self, bins: int) -> float | None:
        """Top-label expected calibration error in ``bins`` equal-width bins (torchmetrics)."""
        if self.probs is None:
            return None
        from torchmetrics.functional.classification import multiclass_calibration_error

        return multiclass_calibration_error(self.probs, self.y, self.probs.shape[1], n_bins=bins,
                                            norm="l1", validate_args=False).item()
