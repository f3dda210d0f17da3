"""Evaluation (docs/METHODS.md §P.3): every registered metric (``domainbed_sc.metrics``) of every
split, from one pass of predictions; records also keep the per-group accuracies and sizes.

What a checkpoint evaluates (issue 15): the splits the collector reads (the dataset's val,
oracle, ID and OOD splits: ``collect.reader.role_split``, which every selection method and table
column goes through) in full; every other split (the training split: for DomainBed's CMNIST the
in-parts of the training environments) on a fixed, seeded subsample of at most
``SUBSAMPLE_MAX`` examples, the same at every checkpoint and across resumes, recorded with
``"subsample": true`` and its size as ``n``.  ``eval_train="full"`` evaluates everything in full.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..datasets.base import GroupDataset, Split
from ..errors import UserError
from ..hparams import seed_hash
from ..metrics import METRICS
from .predictions import Predictions

SUBSAMPLE_MAX = 5000
EVAL_TRAIN = ("subsample", "full")


@torch.inference_mode()
def predict_logits(algorithm, split: Split, batch_size: int, device: torch.device,
                   indices: Tensor | None = None) -> Tensor:
    """Class logits for a whole split (or its ``indices``), in large batches, in eval mode."""
    was_training = algorithm.training
    algorithm.eval()
    logits = [algorithm.predict(b.x.to(device, non_blocking=True))
              for b in split.eval_batches(batch_size, indices)]
    algorithm.train(was_training)
    return torch.cat(logits)


def predict_split(algorithm, split: Split, batch_size: int, device: torch.device,
                  indices: Tensor | None = None) -> Tensor:
    """Predicted classes for a whole split (or its ``indices``)."""
    return predict_logits(algorithm, split, batch_size, device, indices).argmax(1)


def split_metrics(pred: Tensor, split: Split, num_groups: int, train_group_counts: Tensor,
                  indices: Tensor | None = None, probs: Tensor | None = None) -> dict[str, Any]:
    """Every registered metric of a split's predicted classes ``pred`` (with ``indices``: of
    those examples only); the group metrics only where the split has group labels."""
    y, g = (split.y, split.g) if indices is None else (split.y[indices], split.g[indices])
    p = Predictions(pred, y.to(pred.device), g.to(pred.device), num_groups, train_group_counts, probs)
    groups = p.groups
    out: dict[str, Any] = {"n": len(y)}
    out.update({m.name: m.compute(p) for m in METRICS.values() if groups or not m.needs_groups})
    if groups is not None:
        out["group_acc"] = dict(zip(map(str, groups.ids), groups.acc.tolist()))
        out["group_n"] = dict(zip(map(str, groups.ids), groups.n.tolist()))
    return out


def reported_splits(ds: GroupDataset) -> set[str]:
    """The splits records are read for: the val, oracle, ID and OOD roles."""
    return {s for s in (ds.val_split, ds.oracle_split, ds.id_split, ds.ood_split) if s}


def subsample_indices(ds: GroupDataset, name: str, eval_train: str) -> Tensor | None:
    """The examples of split ``name`` a checkpoint evaluates; None: all of them.  The subsample
    depends only on the dataset, its data seed and the split (not on the step or the trial), so
    every checkpoint of every run on the same data evaluates the same examples."""
    if eval_train not in EVAL_TRAIN:
        raise UserError(f"eval_train must be one of {', '.join(EVAL_TRAIN)}, got {eval_train!r}")
    n = len(ds.splits[name])
    if eval_train == "full" or name in reported_splits(ds) or n <= SUBSAMPLE_MAX:
        return None
    gen = torch.Generator().manual_seed(seed_hash("eval_subsample", ds.name, ds.data_seed, name))
    return torch.randperm(n, generator=gen)[:SUBSAMPLE_MAX].sort().values


def evaluate(algorithm, ds: GroupDataset, batch_size: int, device: torch.device,
             group_counts: Tensor, eval_train: str = "subsample") -> dict[str, dict[str, Any]]:
    """The metrics of every split, as a checkpoint records them."""
    metrics = {}
    for name, split in ds.splits.items():
        indices = subsample_indices(ds, name, eval_train)
        logits = predict_logits(algorithm, split, batch_size, device, indices)
        metrics[name] = split_metrics(logits.argmax(1), split, ds.num_groups, group_counts,
                                      indices, logits.double().softmax(1))
        if indices is not None:
            metrics[name]["subsample"] = True
    return metrics
