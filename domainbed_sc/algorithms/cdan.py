"""CDAN, Conditional Adversarial Domain Adaptation (Long et al. 2018; docs/METHODS.md §A.10).

M. Long, Z. Cao, J. Wang, M. I. Jordan, NeurIPS 2018; official code ``thuml/CDAN``.

The domain discriminator D sees the multilinear map of the features f = φ(x) ∈ R^d and the
softmax prediction g ∈ R^C: T(f, g) = g ⊗ f flattened (C·d values, the official code's
``bmm(g.unsqueeze(2), f.unsqueeze(1))`` order), or with ``cdan_random_dim`` = k > 0 the
randomized map (R_f f) ⊙ (R_g g) / √k with fixed Gaussian matrices R_f (d×k), R_g (C×k), drawn
once at construction and kept as buffers (the official ``RandomLayer``; its default is the exact
map, so is ours).  ``cdan_entropy`` gives CDAN+E: example i's discriminator CE is weighted by
w_i = 1 + exp(−H(g_i)), H(g) = −Σ g log(g + 1e-5); the official ``loss.CDAN`` normalises the
weights within each domain, with the normalisers constants, so here they sum to 1 within each
environment and the environments count equally; the weights stay in the generator's graph (the
official code sends the reversed gradient into the entropy too).

g is detached inside T, as in the official PyTorch code (``softmax_output =
input_list[1].detach()`` in ``loss.py``), as METHODS §C.30 records (§Z item 1: the former spec
said "not detached", which the code contradicts).  ``cdan_detach_g: false``
lets the adversarial gradient reach the classifier through g, the literal reading of the paper's
minimax objective.

Training follows DomainBed's ``AbstractDANN`` (dann.py), not the official gradient-reversal
layer: alternating discriminator and generator steps (``d_steps_per_g_step``), D an MLP that
predicts the training environment (several environments, no source/target pair), the generator
minimising CE − λ·L_D, two Adams; the official GRL coefficient schedule has no counterpart.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..datasets.base import Batch
from ..hparams import HParam, non_negative
from . import register_algorithm
from .base import TaskInfo
from .dann import AbstractDANN

ENTROPY_EPS = 1e-5  # the official ``loss.Entropy``'s epsilon


def multilinear_map(f: Tensor, g: Tensor) -> Tensor:
    """T(f, g) = g ⊗ f per example, flattened: column c·d + j holds g_c·f_j."""
    return (g[:, :, None] * f[:, None, :]).flatten(1)


def randomized_multilinear_map(f: Tensor, g: Tensor, r_f: Tensor, r_g: Tensor) -> Tensor:
    """(f R_f) ⊙ (g R_g) / √k, k = the number of columns of R_f and R_g."""
    return (f @ r_f) * (g @ r_g) / math.sqrt(r_f.shape[1])


def entropy_weights(probs: Tensor, e: Tensor) -> Tensor:
    """CDAN+E's w_i = 1 + exp(−H(g_i)), divided by the (constant) sum of w over i's environment
    and by the number of environments, so that each environment's weights sum to 1/n_envs."""
    w = 1.0 + torch.exp((probs * torch.log(probs + ENTROPY_EPS)).sum(1))
    envs, env_of = torch.unique(e, return_inverse=True)
    sums = torch.zeros(len(envs), dtype=w.dtype, device=w.device).index_add(0, env_of, w.detach())
    return w / (sums[env_of] * len(envs))


@register_algorithm("CDAN")
class CDAN(AbstractDANN):
    conditional = False  # no class embeddings: CDAN conditions through T(f, g)
    HPARAMS = {
        "cdan_entropy": HParam(False, None, None, "CDAN+E: entropy-weighted discriminator loss"),
        "cdan_random_dim": HParam(0, None, non_negative,
                                  "0: exact map f⊗g; k > 0: randomized map of width k (paper: 1024)"),
        "cdan_detach_g": HParam(True, None, None, "g enters T as a constant (official code)"),
    }

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        k = hparams["cdan_random_dim"]
        if k:  # buffers: saved with the model and moved with it, never trained
            self.register_buffer("random_f", torch.randn(self.featurizer.n_outputs, k))
            self.register_buffer("random_g", torch.randn(task.num_classes, k))

    def disc_features(self, n: int) -> int:
        return self.hparams["cdan_random_dim"] or n * self.task.num_classes

    def disc_input(self, z: Tensor, logits: Tensor, b: Batch) -> Tensor:
        g = F.softmax(logits, dim=1)
        if self.hparams["cdan_detach_g"]:
            g = g.detach()
        if self.hparams["cdan_random_dim"]:
            return randomized_multilinear_map(z, g, self.random_f, self.random_g)
        return multilinear_map(z, g)

    def disc_weights(self, logits: Tensor, b: Batch) -> Tensor | None:
        if not self.hparams["cdan_entropy"]:
            return None
        return entropy_weights(F.softmax(logits, dim=1), b.e)
