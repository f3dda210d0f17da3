"""CORAL and MMD, DomainBed's ``AbstractMMD``: ERM plus a feature-distribution match between
every pair of training environments, weighted by ``mmd_gamma``.

MMD uses a sum of Gaussian kernels over a fixed bandwidth grid; CORAL matches the feature means
and covariances.  Features are computed per environment, as in DomainBed (with BatchNorm
backbones each environment's batch keeps its own statistics).
"""
from __future__ import annotations

import dataclasses
from itertools import combinations
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..datasets.base import Batch
from ..hparams import HParam, log_uniform, non_negative
from . import register_algorithm
from ._envs import per_env
from .base import COMMON_HPARAMS
from .erm import ERM

KERNEL_GAMMAS = (0.001, 0.01, 0.1, 1, 10, 100, 1000)  # DomainBed's fixed bandwidths


def sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances, floored above 0 as in DomainBed's ``my_cdist``."""
    a_norm = a.pow(2).sum(dim=-1, keepdim=True)
    b_norm = b.pow(2).sum(dim=-1, keepdim=True)
    return torch.addmm(b_norm.T, a, b.T, alpha=-2).add_(a_norm).clamp_min_(1e-30)


def gaussian_kernel(a: Tensor, b: Tensor) -> Tensor:
    d = sq_dists(a, b)
    return sum(torch.exp(-g * d) for g in KERNEL_GAMMAS)


def mmd_discrepancy(a: Tensor, b: Tensor) -> Tensor:
    """Biased MMD² estimate with the multi-bandwidth Gaussian kernel."""
    return gaussian_kernel(a, a).mean() + gaussian_kernel(b, b).mean() - 2 * gaussian_kernel(a, b).mean()


def coral_discrepancy(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference of the feature means plus that of the (unbiased) covariances."""
    mean_a, mean_b = a.mean(0, keepdim=True), b.mean(0, keepdim=True)
    cent_a, cent_b = a - mean_a, b - mean_b
    cov_a = cent_a.T @ cent_a / (len(a) - 1)
    cov_b = cent_b.T @ cent_b / (len(b) - 1)
    return (mean_a - mean_b).pow(2).mean() + (cov_a - cov_b).pow(2).mean()


class AbstractMMD(ERM):
    requires = frozenset({"e"})
    discrepancy: ClassVar[Callable[[Tensor, Tensor], Tensor]]
    HPARAMS = {
        "mmd_gamma": HParam(1.0, log_uniform(-1, 1), non_negative, "weight of the matching penalty"),
        "sampler": dataclasses.replace(COMMON_HPARAMS["sampler"], default="uniform_env"),
    }

    def penalty(self, features: list[Tensor]) -> Tensor:
        """Mean discrepancy over all pairs of environments (0 with a single environment)."""
        pairs = [self.discrepancy(a, b) for a, b in combinations(features, 2)]
        return torch.stack(pairs).mean() if pairs else features[0].new_zeros(())

    def update(self, batches: list[Batch]) -> dict[str, Tensor]:
        envs = per_env(batches)
        features = [self.featurizer(b.x) for b in envs]
        nll = torch.stack([F.cross_entropy(self.classifier(f), b.y) for f, b in zip(features, envs)]).mean()
        penalty = self.penalty(features)
        self.step(nll + self.hparams["mmd_gamma"] * penalty)
        return {"loss": nll.detach(), "penalty": penalty.detach()}


@register_algorithm("MMD")
class MMD(AbstractMMD):
    discrepancy = staticmethod(mmd_discrepancy)


@register_algorithm("CORAL")
class CORAL(AbstractMMD):
    discrepancy = staticmethod(coral_discrepancy)
