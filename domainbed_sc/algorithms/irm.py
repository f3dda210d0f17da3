"""IRM, the IRMv1 penalty as DomainBed implements it (docs/METHODS.md §A.3).

Loss = mean_e R^e + λ_t · mean_e P^e, where P^e is the product of the gradients of the risks of
the even and odd halves of environment e's minibatch with respect to a dummy scale w = 1 on the
logits (an unbiased estimate of ‖∇_w R^e‖²).  λ_t = 1 before ``irm_penalty_anneal_iters`` and
``irm_lambda`` from then on; the optimizer is re-created at the switch, as in DomainBed, because
Adam's moment estimates do not survive the jump in gradient scale.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, autograd

from ..datasets.base import Batch
from ..hparams import HParam, log_int, log_uniform, non_negative
from . import register_algorithm
from ._envs import per_env
from .base import COMMON_HPARAMS, TaskInfo
from .erm import ERM


def irm_penalty(logits: Tensor, y: Tensor) -> Tensor:
    """∂R_even/∂w · ∂R_odd/∂w at w = 1, kept in the graph so it can be minimised."""
    scale = torch.ones((), device=logits.device, dtype=logits.dtype, requires_grad=True)
    loss_1 = F.cross_entropy(logits[::2] * scale, y[::2])
    loss_2 = F.cross_entropy(logits[1::2] * scale, y[1::2])
    grad_1 = autograd.grad(loss_1, [scale], create_graph=True)[0]
    grad_2 = autograd.grad(loss_2, [scale], create_graph=True)[0]
    return grad_1 * grad_2


@register_algorithm("IRM")
class IRM(ERM):
    requires = frozenset({"e"})
    HPARAMS = {
        "irm_lambda": HParam(1e2, log_uniform(-1, 5), non_negative),
        "irm_penalty_anneal_iters": HParam(500, log_int(0, 4), non_negative),
        "sampler": dataclasses.replace(COMMON_HPARAMS["sampler"], default="uniform_env"),
    }

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))  # resumes with the model

    def update(self, batches: list[Batch]) -> dict[str, Tensor]:
        envs = per_env(batches)
        anneal = self.hparams["irm_penalty_anneal_iters"]
        count = int(self.update_count)
        weight = self.hparams["irm_lambda"] if count >= anneal else 1.0
        logits = self.predict(torch.cat([b.x for b in envs])).split([len(b) for b in envs])
        nll = torch.stack([F.cross_entropy(z, b.y) for z, b in zip(logits, envs)]).mean()
        penalty = torch.stack([irm_penalty(z, b.y) for z, b in zip(logits, envs)]).mean()
        loss = nll + weight * penalty
        if count == anneal:
            self.reset_optimizer()
        self.step(loss)
        self.update_count += 1
        return {"loss": loss.detach(), "nll": nll.detach(), "penalty": penalty.detach()}

    def reset_optimizer(self) -> None:
        """A fresh optimizer that keeps the current learning rate and the lr schedule's position."""
        old_scheduler = self.scheduler
        self.optimizer = self.make_optimizer(self.network.parameters(),
                                             lr=self.optimizer.param_groups[0]["lr"])
        self.scheduler = self.make_scheduler(self.optimizer)
        if old_scheduler is not None:
            self.scheduler.load_state_dict(old_scheduler.state_dict())
