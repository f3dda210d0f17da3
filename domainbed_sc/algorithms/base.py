"""The algorithm interface (docs/METHODS.md §P.2, DomainBed style).

An algorithm is one small ``nn.Module`` class: ``update(batches) -> dict of losses`` and
``predict(x) -> logits``.  ``batches`` is a list of ``Batch``: one per training environment with
the ``uniform_env`` sampler, a single one otherwise.  It owns its optimizers, declares the
training-time labels it ``requires`` (a subset of "s", "g", "e"; ``required_labels`` when they
depend on an hparam) and its hyperparameter space ``HPARAMS`` (merged with its base classes').
Multi-stage methods override ``on_epoch``, which the trainer calls with an ``EpochContext``
(``context.py``) at every epoch boundary and once more after the last step.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..checks import OneRegistered
from ..datasets.base import Batch
from ..hparams import HParam, choice, log_uniform, non_negative, one_of, positive, pow2_int
from ..networks import Featurizer, build_featurizer
from ..training.samplers import SAMPLERS
from .context import EpochContext


@dataclass(frozen=True)
class TaskInfo:
    """What an algorithm may know about the dataset it trains on."""

    num_classes: int
    num_attributes: int
    num_groups: int
    num_envs: int
    input_shape: tuple[int, ...]
    train_group_counts: tuple[int, ...]
    steps_per_epoch: int
    total_steps: int


#: Hyperparameters every algorithm has (docs/METHODS.md §A.0: DomainBed's ERM space).
COMMON_HPARAMS: dict[str, HParam] = {
    "lr": HParam(1e-3, log_uniform(-4.5, -2.5), positive, large=(5e-5, log_uniform(-5, -3.5))),
    "weight_decay": HParam(0.0, None, non_negative, large=(0.0, log_uniform(-6, -2))),
    "batch_size": HParam(64, pow2_int(3, 9), positive, large=(32, pow2_int(3, 5.5))),
    "optimizer": HParam("adam", None, one_of("adam", "sgd")),
    "momentum": HParam(0.9, None, non_negative, "SGD momentum"),
    "nesterov": HParam(False),
    "lr_milestones": HParam([], None, None, "epochs at which the lr is multiplied by lr_gamma",
                             item=float, item_check=non_negative),
    "lr_gamma": HParam(0.1, None, positive),
    "arch": HParam("mlp", None, None, "backbone name (datasets set their own default)"),
    "pretrained": HParam("none", None, None, "torchvision weights name, timm (timm: archs) or none"),
    "resnet_dropout": HParam(0.0, None, non_negative, large=(0.0, choice([0.0, 0.1, 0.5]))),
    "input_resize": HParam(0, None, non_negative,
                           "bilinearly upsample inputs to this square size inside the network, "
                           "0 = off (METHODS §C.13: 224 for CMNIST on ResNet-50)"),
    "sampler": HParam("random", None, OneRegistered(SAMPLERS)),
}


class Algorithm(nn.Module):
    requires: ClassVar[frozenset[str]] = frozenset()
    #: may be trained packed (training/packed.py); honoured only where the class itself sets it,
    #: so a subclass that changes ``update`` is not packed by accident
    packable: ClassVar[bool] = False
    HPARAMS: ClassVar[dict[str, HParam]] = COMMON_HPARAMS
    name: ClassVar[str]
    #: multi-stage methods (METHODS §P.4): how many stages, and the one the model is in now (a class
    #: attribute, so subclasses may make it a plain attribute or a property); a record's
    #: checkpoint counts for model selection only in the final stage, the model the method reports
    num_stages: ClassVar[int] = 1
    stage: int = 1

    def __init__(self, task: TaskInfo, hparams: dict[str, Any]):
        super().__init__()
        self.task = task
        self.hparams = hparams

    # -- the interface -------------------------------------------------------------------
    def update(self, batches: list[Batch]) -> dict[str, Tensor | float]:
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, batches: list[Batch]) -> tuple[Tensor, dict[str, Tensor]]:
        """(the training loss, the tensors to log) without side effects, for packed training:
        it runs under ``torch.vmap``, so no randomness and no control flow on tensor values."""
        raise NotImplementedError

    def on_epoch(self, ctx: EpochContext) -> None:
        """Called at the start of every epoch and once after training (multi-stage methods)."""

    @classmethod
    def has_epoch_hooks(cls) -> bool:
        """Whether the class overrides ``on_epoch`` (the trainer skips the base's no-op)."""
        return cls.on_epoch is not Algorithm.on_epoch

    @classmethod
    def required_labels(cls, hparams: dict[str, Any]) -> set[str]:
        """The training-time labels a run with these hparams needs: ``requires`` unless a mode
        hparam decides (GroupDRO's groupdro_mode, DL's dl_variant)."""
        return set(cls.requires)

    @classmethod
    def label_reason(cls, hparams: dict[str, Any]) -> str | None:
        """The hparam setting that makes ``required_labels`` what it is, for the requirement
        error (e.g. "groupdro_mode=env"); None when the labels do not depend on one."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state to checkpoint beyond parameters, buffers and optimizers."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def space(cls) -> dict[str, HParam]:
        """The full hyperparameter space: the class's HPARAMS over its bases'."""
        merged: dict[str, HParam] = {}
        for klass in reversed(cls.__mro__):
            merged.update(getattr(klass, "__dict__", {}).get("HPARAMS", {}))
        return merged

    # -- helpers for subclasses ----------------------------------------------------------
    @staticmethod
    def step_optimizer(loss: Tensor, optimizer: Optimizer | Sequence[Optimizer],
                       scheduler: LRScheduler | None | Sequence[LRScheduler | None] = None) -> None:
        """One training step on ``loss``: clear the gradients, backpropagate once, step the
        optimizer, then the scheduler (per step; None: no schedule).  Several optimizers (and
        their schedulers) step on one backward pass, e.g. EX2L's two models."""
        optimizers = [optimizer] if isinstance(optimizer, Optimizer) else list(optimizer)
        schedulers = scheduler if isinstance(scheduler, Sequence) else [scheduler]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
        for sched in schedulers:
            if sched is not None:
                sched.step()

    def make_featurizer(self) -> Featurizer:
        hp = self.hparams
        return build_featurizer(hp["arch"], self.task.input_shape, hp["input_resize"],
                                pretrained=hp["pretrained"], dropout=hp["resnet_dropout"])

    def make_optimizer(self, params, lr: float | None = None,
                       weight_decay: float | None = None) -> Optimizer:
        hp = self.hparams
        lr = hp["lr"] if lr is None else lr
        wd = hp["weight_decay"] if weight_decay is None else weight_decay
        # fused: one kernel for all parameters instead of ~10 small ops each (small nets on CPU
        # spent ~10% of a step in the per-parameter Python loop)
        if hp["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=hp["momentum"],
                                   nesterov=hp["nesterov"], fused=True)
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, fused=True)

    def make_scheduler(self, optimizer: Optimizer) -> LRScheduler | None:
        """MultiStepLR over steps, from ``lr_milestones`` given in epochs (None when empty)."""
        milestones = [int(m * self.task.steps_per_epoch) for m in self.hparams["lr_milestones"]]
        if not milestones:
            return None
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, self.hparams["lr_gamma"])

    def checkpoint_state(self) -> dict[str, Any]:
        stateful = {k: v.state_dict() for k, v in vars(self).items() if _is_stateful(v)}
        return {"module": self.state_dict(), "optim": stateful, "extra": self.extra_state()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        # extra state first: it may rebuild optimizers (e.g. a stage change) before they load
        self.load_extra_state(state["extra"])
        self.load_state_dict(state["module"])
        for k, v in vars(self).items():
            if _is_stateful(v) and k in state["optim"]:
                v.load_state_dict(state["optim"][k])


def _is_stateful(obj: Any) -> bool:
    return isinstance(obj, (Optimizer, LRScheduler))
