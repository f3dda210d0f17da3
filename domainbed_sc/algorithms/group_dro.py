"""GroupDRO (docs/METHODS.md §A.2): minimise q-weighted group losses, q pushed to the worst group.

``groupdro_mode=group`` (default) is the GroupDRO paper's online algorithm over the y×s groups
[GDRO ``loss.py``]; ``groupdro_mode=env`` is DomainBed's ``GroupDRO``, whose "groups" are the
training environments.  Both share one vectorised update, indexed by g or by e (DomainBed runs
the network once per environment; we run it once on the concatenation, which differs only for
BatchNorm backbones).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from ..datasets.base import Batch
from ..errors import UserError
from ..hparams import HParam, choice, log_uniform, non_negative, one_of, positive
from . import register_algorithm
from .base import COMMON_HPARAMS, TaskInfo
from .erm import ERM


def group_mean_losses(losses: Tensor, ids: Tensor, n: int) -> Tensor:
    """Mean of per-example ``losses`` for each id in 0..n-1, 0 for ids absent from the batch."""
    sums = torch.zeros(n, dtype=losses.dtype, device=losses.device).scatter_add(0, ids, losses)
    counts = torch.bincount(ids, minlength=n)
    return sums / counts.clamp_min(1)


def generalization_adjustment(train_counts: tuple[int, ...], C: float) -> Tensor:
    """C/√n_g, added to the group losses that update q (not to the trained loss); 0 for groups
    empty in training, which no batch ever contains."""
    n = torch.tensor(train_counts, dtype=torch.float)
    return torch.where(n > 0, C / n.clamp_min(1).sqrt(), 0.0)


@register_algorithm("GroupDRO")
class GroupDRO(ERM):
    requires = frozenset({"g"})  # group mode; see required_labels
    HPARAMS = {
        "groupdro_mode": HParam("group", None, one_of("group", "env"),
                                "weight y×s groups (group) or DomainBed's environments (env)"),
        "groupdro_eta": HParam(1e-2, log_uniform(-3, -1), positive),
        "groupdro_C": HParam(0, choice([0, 1, 2, 3, 4, 5]), non_negative,
                             "generalization adjustment C/sqrt(n_g), group mode only"),
        "sampler": dataclasses.replace(COMMON_HPARAMS["sampler"], default="uniform_group"),
    }

    @classmethod
    def required_labels(cls, hparams) -> set[str]:
        return {"g"} if hparams["groupdro_mode"] == "group" else {"e"}

    @classmethod
    def label_reason(cls, hparams) -> str:
        """The hparam that decides which labels it needs (for the requirement error)."""
        return f"groupdro_mode={hparams['groupdro_mode']}"

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        self.by_group = hparams["groupdro_mode"] == "group"
        if not self.by_group and hparams["sampler"] != "uniform_env":
            raise UserError("groupdro_mode=env weights per-environment minibatches (DomainBed): "
                            "set sampler=uniform_env too")
        if not self.by_group and hparams["groupdro_C"] > 0:
            raise UserError("groupdro_C applies to groupdro_mode=group only")
        n = task.num_groups if self.by_group else task.num_envs
        self.register_buffer("q", torch.full((n,), 1.0 / n))  # a buffer: checkpointed with the model
        adjustment = (generalization_adjustment(task.train_group_counts, hparams["groupdro_C"])
                      if self.by_group else torch.zeros(n))
        self.register_buffer("adjustment", adjustment, persistent=False)

    def update(self, batches: list[Batch]) -> dict[str, Tensor]:
        b = Batch.cat(batches)
        losses = F.cross_entropy(self.predict(b.x), b.y, reduction="none")
        group_losses = group_mean_losses(losses, b.g if self.by_group else b.e, len(self.q))
        with torch.no_grad():  # the weights see the losses as constants
            self.q.mul_(torch.exp(self.hparams["groupdro_eta"] * (group_losses + self.adjustment)))
            self.q.div_(self.q.sum())
        loss = (self.q * group_losses).sum()
        self.step(loss)
        return {"loss": loss.detach(), "worst_group_loss": group_losses.detach().max()}
