"""DL, the dissimilarity loss of the DL thesis (docs/METHODS.md §A.6, §B.1, §C.12, §C.17).

The embedding z is the featurizer output (LeNet-5: the post-ReLU 84-d fc2 activation).  Within
the minibatch, S_ij = ẑ_iᵀẑ_j with ẑ = z/(‖z‖ + 1e-8), and DL pushes apart the pairs M that
share a label *and* a background:

    L = CE + λ·L_dis,   L_dis = mean of S_ij over M   (0 when M is empty).

Variants (``dl_variant``): ``supervised`` M = {i≠j, y_i = y_j, s_i = s_j} (needs s);
``no_bg`` M = {i≠j, y_i = y_j}; ``threshold`` M = {i≠j, y_i = y_j, S_ij > 1 − τ}, the mask
computed without gradient (needs no s).

Thesis protocol (sweep files, not the defaults here): LeNet-5, Adam lr 5e-3, batch 64 (critical:
it sets how many pairs a batch holds), 10 epochs, MultiStepLR γ = 0.1 at epochs [5, 8] (our
choice, the milestones are not given), final-epoch selection, λ = 1.25.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..datasets.base import Batch
from ..hparams import HParam, non_negative, one_of, uniform
from . import register_algorithm
from .base import COMMON_HPARAMS
from .erm import ERM

EPS = 1e-8
VARIANTS = ("supervised", "no_bg", "threshold")


def cosine_matrix(z: Tensor) -> Tensor:
    """S = ẑẑᵀ with ẑ = z/(‖z‖ + ε): a zero embedding (a dead ReLU layer) gives S = 0, not NaN."""
    z_hat = z / (z.norm(dim=1, keepdim=True) + EPS)
    return z_hat @ z_hat.T


def pair_mask(sim: Tensor, y: Tensor, s: Tensor, variant: str, tau: float) -> Tensor:
    """The boolean B×B mask of the pairs (i, j), i ≠ j, that DL pushes apart."""
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    mask = (y[:, None] == y[None, :]) & ~eye
    if variant == "supervised":
        mask &= s[:, None] == s[None, :]
    elif variant == "threshold":
        mask &= sim.detach() > 1 - tau  # a selection, not a function to differentiate
    return mask


def masked_mean(sim: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``sim`` over ``mask``; 0 (still in the graph) when the mask is empty, without a
    host sync on the mask size."""
    return (sim * mask).sum() / mask.sum().clamp(min=1)


@register_algorithm("DL")
class DL(ERM):
    packable = True  # loss() is pure and vmap-safe: K seeds can train as one pack
    requires = frozenset({"s"})  # for the default (supervised) variant; see required_labels
    HPARAMS = {
        "dl_variant": HParam("supervised", None, one_of(*VARIANTS)),
        "dl_lambda": HParam(1.25, uniform(0.0, 2.5), non_negative, "weight of L_dis"),
        "dl_tau": HParam(0.001, None, non_negative, "threshold variant: pairs with S > 1 - tau"),
        "lr_milestones": dataclasses.replace(COMMON_HPARAMS["lr_milestones"], default=[5, 8]),
    }

    @classmethod
    def required_labels(cls, hparams: dict[str, Any]) -> set[str]:
        return {"s"} if hparams["dl_variant"] == "supervised" else set()

    def loss(self, batches: list[Batch]) -> tuple[Tensor, dict[str, Tensor]]:
        """(CE + λ·L_dis, the terms to log); pure, with no control flow on tensor values."""
        b = Batch.cat(batches)
        z = self.featurizer(b.x)
        ce = F.cross_entropy(self.classifier(z), b.y)
        sim = cosine_matrix(z)
        mask = pair_mask(sim, b.y, b.s, self.hparams["dl_variant"], self.hparams["dl_tau"])
        dis = masked_mean(sim, mask)
        loss = ce + self.hparams["dl_lambda"] * dis
        # the (ordered) pair count shows how strong DL is in a batch: batch size is critical
        return loss, {"loss": loss.detach(), "ce": ce.detach(), "dis": dis.detach(),
                      "pairs": mask.sum().float()}
