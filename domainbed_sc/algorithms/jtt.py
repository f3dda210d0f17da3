"""JTT, Just Train Twice (docs/METHODS.md §A.5; Liu et al., ICML 2021): ERM for T epochs, then ERM
again from the same initial weights with the training examples the first model got wrong upsampled.

At the start of epoch T the epoch hook
1. predicts the whole training split in eval mode: the error set E = {i : argmax f(x_i) != y_i};
2. restores the weights the model had when it was built, with a fresh optimizer (the official
   code trains the final model in a second run with the same seed, hence the same initial
   weights; the trainer seeds torch before building the algorithm, so a resumed run rebuilds
   them identically);
3. switches the trainer to weighted sampling with replacement, w_i = 1 + λ_up for i in E
   (``official_1_plus``: D ∪ λ_up copies of E) or λ_up (``spuco``: λ_up copies), 1 otherwise.
   Drawing with these weights gives every example the share of draws its copies have in the
   upsampled set;
4. starts stage 2 with the official schedule (METHODS §A.5, §C.28; official ``run_expt.py``: the
   final model trains ``n_epochs`` over ``ConcatDataset([D, E × λ_up])``, no drop_last): an epoch is
   ⌈Σ_i w_i / batch_size⌉ steps (⌈(|D| + λ_up·|E|)/B⌉ officially), logged as
   ``jtt_stage2_steps_per_epoch`` with the stage's length ``jtt_stage2_steps``.

Length (the official run = T identification epochs + n_epochs final epochs): the run's
``--epochs E`` is the final model's n_epochs, so JTT trains T + E epochs, T at len(train) /
batch_size steps and E at the upsampled length; with ``--steps S`` stage 2 trains S steps after
the T epochs.  T = max(1, round(jtt_T_fraction · E)) (E = S / steps_per_epoch with --steps); the
default 0.2 is Waterbirds' T = 60 for 300 epochs, the search {0.05, 0.1, 0.2, 0.4} is a
proposal, not from the paper (METHODS §A.5).
Until E is known (epoch T), the trainer plans stage 2 at the stage-1 epoch length.
E is checkpointed (``extra_state``) and the trainer checkpoints the sampling weights and the
schedule, so a resumed run lands in the right stage.  Records name their ``stage`` (1 before the
switch, 2 after); model selection sees only stage 2, the model JTT reports (METHODS §P.4).
Group labels are never used for training; where the dataset has them, the record after the
switch logs |E| and E's precision / recall against the minority groups.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from ..hparams import HParam, between, choice, one_of, positive
from . import register_algorithm
from .base import TaskInfo
from .erm import ERM

COUNT_MODES = ("official_1_plus", "spuco")


def stage1_epochs(task: TaskInfo, fraction: float) -> int:
    return max(1, round(fraction * task.total_steps / task.steps_per_epoch))


def upsampling_weights(n: int, error_set: Tensor, lambda_up: float, count_mode: str) -> Tensor:
    """Per-example draw weights: 1 + λ_up (official) or λ_up (SpuCo) on E, 1 elsewhere."""
    weights = torch.ones(n, dtype=torch.double)
    weights[error_set.cpu()] = 1 + lambda_up if count_mode == "official_1_plus" else lambda_up
    return weights


def minority_groups(train_group_counts: Tensor, num_attributes: int) -> Tensor:
    """Non-empty groups with fewer training examples than the largest group of their class."""
    per_class = train_group_counts.view(-1, num_attributes)
    largest = per_class.max(dim=1, keepdim=True).values
    return ((per_class > 0) & (per_class < largest)).flatten()


def error_set_stats(wrong: Tensor, g: Tensor, minority: Tensor) -> dict[str, Any]:
    """|E|, stage-1 training accuracy and, on examples with a group label, E's precision and
    recall as a detector of minority-group examples (None where undefined)."""
    stats: dict[str, Any] = {"jtt_error_set_size": int(wrong.sum()),
                             "jtt_stage1_train_acc": 1 - wrong.double().mean().item()}
    known = g >= 0
    if bool(known.any()):
        wrong, in_minority = wrong[known], minority.to(g.device)[g[known]]
        hits = int((wrong & in_minority).sum())
        stats["jtt_error_precision"] = hits / int(wrong.sum()) if bool(wrong.any()) else None
        stats["jtt_error_recall"] = hits / int(in_minority.sum()) if bool(in_minority.any()) else None
    return stats


@register_algorithm("JTT")
class JTT(ERM):
    HPARAMS = {
        "jtt_T_fraction": HParam(0.2, choice([0.05, 0.1, 0.2, 0.4]), between(0, 1),
                                 "stage-1 epochs as a fraction of the run's epochs, in (0, 1)"),
        "jtt_lambda_up": HParam(100.0, choice([5.0, 10.0, 20.0, 50.0, 100.0]), positive),
        "jtt_count_mode": HParam("official_1_plus", None, one_of(*COUNT_MODES),
                                 "error examples drawn 1 + λ_up (official) or λ_up (spuco) times"),
    }

    num_stages = 2

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        self.stage1_epochs = stage1_epochs(task, hparams["jtt_T_fraction"])
        self.initial_state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        self.error_set: Tensor | None = None  # training indices; set once stage 2 has begun

    @property
    def stage(self) -> int:
        return 1 if self.error_set is None else 2

    def on_epoch(self, ctx) -> None:
        if ctx.step == 0:  # T epochs, then the final model planned at this epoch length
            ctx.start_stage(ctx.sampler.steps_per_epoch,
                            self.stage1_epochs + self.task.total_steps / self.task.steps_per_epoch)
        if ctx.final or self.error_set is not None or ctx.epoch < self.stage1_epochs:
            return
        train = ctx.dataset.splits["train"]
        wrong = ctx.predict(self, "train") != train.y.to(ctx.device)
        self.error_set = wrong.nonzero().flatten().cpu()
        hp = self.hparams
        weights = upsampling_weights(len(train), self.error_set, hp["jtt_lambda_up"],
                                     hp["jtt_count_mode"])
        ctx.set_sample_weights(weights)
        # the upsampled set's size is Σ w_i (the weights are copy counts)
        per_epoch = math.ceil(float(weights.sum()) / sum(ctx.sampler.batch_sizes()))
        steps = ctx.start_stage(per_epoch)
        # lr milestones (in epochs) count stage-2 epochs
        self.task = dataclasses.replace(self.task, steps_per_epoch=per_epoch, total_steps=steps)
        self.restart()
        ctx.extra.update({"jtt_stage2_steps_per_epoch": per_epoch, "jtt_stage2_steps": steps})
        minority = minority_groups(ctx.dataset.train_group_counts(), ctx.dataset.num_attributes)
        ctx.extra.update(error_set_stats(wrong, train.g.to(ctx.device), minority))
        ctx.extra["jtt_stage2_epoch"] = ctx.epoch

    def restart(self) -> None:
        """Back to the initial weights, with a fresh optimizer and schedule."""
        self.network.load_state_dict(self.initial_state)
        self.optimizer = self.make_optimizer(self.network.parameters())
        self.scheduler = self.make_scheduler(self.optimizer)

    def extra_state(self) -> dict[str, Any]:
        return {"error_set": self.error_set}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        error_set = state["error_set"]
        self.error_set = None if error_set is None else error_set.cpu()
