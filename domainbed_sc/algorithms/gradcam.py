"""Grad-CAM heatmaps that stay differentiable in the feature map (eX2L, docs/METHODS.md §A.7).

H = ReLU(Σ_k α_k A_k) over the channels k of a conv feature map A (B×K'×h×w), with
α_k = mean over h·w of ∂score/∂A_k.  α comes from ``autograd.grad(..., create_graph=False)``, so
it is a constant (no second-order graph), while A stays in the graph: a penalty on H trains the
network through A.  Detaching H as a whole would give the penalty zero gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def class_logits(out: Tensor) -> Tensor:
    """K-way logits of a head output; a single binary logit z reads as (0, z), so that cross-
    entropy on them equals BCE on z and argmax predicts 1 iff z > 0."""
    return torch.cat([torch.zeros_like(out), out], 1) if out.shape[1] == 1 else out


def head_loss(out: Tensor, target: Tensor) -> Tensor:
    """BCE on a single binary logit, cross-entropy on K-way logits (docs/METHODS.md §C.25)."""
    if out.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(out[:, 0], target.to(out.dtype))
    return F.cross_entropy(out, target)


def target_score(out: Tensor, target: Tensor) -> Tensor:
    """Per-sample Grad-CAM target: the true-class logit, or ±z for a single binary logit
    (z if target = 1, −z if target = 0; docs/METHODS.md §A.7; eX2L App. B.1)."""
    if out.shape[1] == 1:
        return out[:, 0] * (2 * target - 1).to(out.dtype)
    return out.gather(1, target[:, None])[:, 0]


def grad_cam(maps: Tensor, out: Tensor, target: Tensor) -> Tensor:
    """B×h×w heatmaps of ``out``'s target scores at ``maps``, the feature map ``out`` came from."""
    grads, = torch.autograd.grad(target_score(out, target).sum(), maps, retain_graph=True)
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * maps).sum(1))
