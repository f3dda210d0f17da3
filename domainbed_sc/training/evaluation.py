"""Metrics (SPEC §1.1): accuracy, per-group accuracy, AA, WGA, training-group-weighted accuracy."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..datasets.base import Split


@torch.inference_mode()
def predict_split(algorithm, split: Split, batch_size: int, device: torch.device) -> Tensor:
    """Predicted classes for a whole split, in large batches, in eval mode."""
    was_training = algorithm.training
    algorithm.eval()
    preds = [algorithm.predict(b.x.to(device, non_blocking=True)).argmax(1)
             for b in split.eval_batches(batch_size)]
    algorithm.train(was_training)
    return torch.cat(preds)


def split_metrics(pred: Tensor, split: Split, num_groups: int,
                  train_group_counts: Tensor) -> dict[str, Any]:
    """AA is the sample mean; WGA the minimum over the split's non-empty groups (y, s)."""
    y, g = split.y.to(pred.device), split.g.to(pred.device)
    correct = (pred == y).double()
    out: dict[str, Any] = {"n": len(y), "acc": correct.mean().item()}
    known = g >= 0
    if not bool(known.any()):
        return out
    n_g = torch.bincount(g[known], minlength=num_groups).cpu()
    hits = torch.bincount(g[known], weights=correct[known], minlength=num_groups).cpu()
    present = n_g > 0
    acc_g = hits[present] / n_g[present]
    weights = train_group_counts.double()[present]
    out.update({
        "wga": acc_g.min().item(),
        "acc_gmean": acc_g.mean().item(),
        "acc_adj": (acc_g * weights).sum().item() / weights.sum().item() if weights.sum() > 0 else None,
        "group_acc": {str(k): v for k, v in zip(present.nonzero().flatten().tolist(), acc_g.tolist())},
        "group_n": {str(k): v for k, v in zip(present.nonzero().flatten().tolist(), n_g[present].tolist())},
    })
    return out
