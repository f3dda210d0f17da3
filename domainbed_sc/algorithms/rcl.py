"""RCL, the reverse contrastive loss of *Look Beyond Bias* (docs/METHODS.md §A.8, §C.21, §C.22).

f is the flattened output of the conv feature extractor (``featurizer.body``), min-max scaled by
the batch's scalar min and max, in the graph.  Every sample i is an anchor; p(i) is its nearest
same-class sample (j ≠ i, L1 distance) and n(i) its nearest other-class sample.  RCL pushes each
anchor away from its easy positive, which is detached:

    ℓ_i = −d(f̂_i, sg(f̂_p(i)))  if d(f̂_i, f̂_p(i)) < m·d(f̂_i, f̂_n(i)), else 0,
    L = CE + α·(1/B)·Σ_i ℓ_i,

with anchors that lack a positive or a negative contributing 0.  m = ∞ (the default) makes the
push unconditional.  d is the L1 sum (``rcl_distance`` = mean divides it by the feature size).

Paper protocol (sweep files, not the defaults here): the JiGen MNIST net (arch ``rcl_cnn``), SGD
with Nesterov momentum 0.9, fixed lr 1e-3, weight decay 1e-5, batch 128, 10 epochs, no
augmentation, best-validation-accuracy selection, 10 runs; i.e. hparams
``{"arch": "rcl_cnn", "optimizer": "sgd", "nesterov": true, "momentum": 0.9, "lr": 0.001,
"weight_decay": 1e-05, "batch_size": 128}``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..datasets.base import Batch
from ..errors import UserError
from ..hparams import HParam, choice, non_negative, one_of, positive
from . import register_algorithm
from .base import TaskInfo
from .erm import ERM

EPS = 1e-8
INF = float("inf")


def minmax_scale(f: Tensor) -> Tensor:
    """(f − min)/(max − min + ε) with the scalar min and max of the whole batch, in the graph."""
    lo, hi = f.min(), f.max()
    return (f - lo) / (hi - lo + EPS)


def l1(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """Row-wise L1 distance between matching rows: the sum, or the mean over features."""
    d = (a - b).abs().sum(-1)
    return d / a.shape[-1] if distance == "mean" else d


@dataclass
class Triplets:
    """Per anchor: the nearest positive and negative (indices, L1 sum distances) and whether
    they exist."""

    pos: Tensor
    neg: Tensor
    d_pos: Tensor
    d_neg: Tensor
    has_pos: Tensor
    has_neg: Tensor

    def active(self, margin: float) -> Tensor:
        """Anchors that contribute: both exist and d_pos < m·d_neg (always, for m = ∞; the
        explicit case avoids ∞·0 = NaN when a negative coincides with the anchor)."""
        valid = self.has_pos & self.has_neg
        return valid & (self.d_pos < margin * self.d_neg) if math.isfinite(margin) else valid


@torch.no_grad()
def nearest_triplets(f: Tensor, y: Tensor) -> Triplets:
    """Nearest same-class (j ≠ i) and other-class sample of every anchor, by L1 sum distance
    (the choices and the ratio d_pos/d_neg are the same for the mean)."""
    d = torch.cdist(f, f, p=1)  # B×B without the B×B×D difference tensor
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    same = (y[:, None] == y[None, :]) & ~eye
    other = y[:, None] != y[None, :]
    d_pos, pos = d.masked_fill(~same, INF).min(1)
    d_neg, neg = d.masked_fill(~other, INF).min(1)
    return Triplets(pos, neg, d_pos, d_neg, same.any(1), other.any(1))


def reverse_contrastive_loss(f_hat: Tensor, y: Tensor, margin: float, distance: str) -> Tensor:
    """L_RC = (1/B) Σ_i ℓ_i on scaled features; the gradient reaches f_hat through the anchors only."""
    t = nearest_triplets(f_hat, y)
    push = -l1(f_hat, f_hat[t.pos].detach(), distance)
    return (push * t.active(margin)).mean()


@register_algorithm("RCL")
class RCL(ERM):
    packable = True  # loss() is pure and vmap-safe: K seeds can train as one pack
    HPARAMS = {
        "rcl_alpha": HParam(1.0, choice([0.001, 0.01, 0.1, 1.0, 5.0, 10.0]), non_negative,
                            "weight of the reverse contrastive loss"),
        "rcl_margin": HParam(INF, choice([0.2, 0.4, 0.6, 0.8, 0.9, INF]), positive,
                             "m: push only if d(a,p) < m*d(a,n); inf = always"),
        "rcl_distance": HParam("sum", None, one_of("sum", "mean"), "L1 sum or mean over features"),
    }

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        if isinstance(self.featurizer.body, nn.Identity):
            raise UserError(f"RCL needs a convolutional backbone; arch {hparams['arch']} has no "
                            "conv feature extractor (try rcl_cnn or mnist_cnn)")

    def loss(self, batches: list[Batch]) -> tuple[Tensor, dict[str, Tensor]]:
        """(CE + α·L_RC, the terms to log); pure, with no control flow on tensor values."""
        b = Batch.cat(batches)
        maps = self.featurizer.body(b.x)
        ce = F.cross_entropy(self.classifier(self.featurizer.neck(maps)), b.y)
        rc = reverse_contrastive_loss(minmax_scale(maps.flatten(1)), b.y,
                                      self.hparams["rcl_margin"], self.hparams["rcl_distance"])
        loss = ce + self.hparams["rcl_alpha"] * rc
        return loss, {"loss": loss.detach(), "ce": ce.detach(), "rc": rc.detach()}
