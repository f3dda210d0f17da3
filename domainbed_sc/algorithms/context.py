"""What the trainer hands a multi-stage method at every epoch boundary (docs/METHODS.md §P.4).

Part of the algorithm contract (``Algorithm.on_epoch`` takes an ``EpochContext``), so it lives
with the algorithms; the trainer builds one per hook and takes the sampler and schedule back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..datasets.base import GroupDataset
from ..errors import UserError
from ..training.evaluation import predict_split
from ..training.records import RunArgs
from ..training.samplers import Sampler, WeightedSampler


def total_steps(args: RunArgs, steps_per_epoch: int) -> int:
    """A run's length in steps: ``--steps``, or ``--epochs`` (default 1) epochs."""
    if args.steps is not None and args.epochs is not None:
        raise UserError("give --steps or --epochs, not both")
    if args.steps is not None:
        return int(args.steps)
    return max(1, round((args.epochs if args.epochs is not None else 1.0) * steps_per_epoch))


@dataclass
class Schedule:
    """How long epochs are and when the run ends.  A stage switch may change both (JTT's
    upsampled stage 2, docs/METHODS.md §A.5): from ``origin_step`` on, an epoch is
    ``steps_per_epoch`` steps and the first one is epoch ``origin_epoch``."""

    steps_per_epoch: int
    total: int
    origin_step: int = 0
    origin_epoch: int = 0

    def epoch(self, step: int) -> float:
        return self.origin_epoch + (step - self.origin_step) / self.steps_per_epoch

    def epoch_starts(self, step: int) -> bool:
        return (step - self.origin_step) % self.steps_per_epoch == 0


@dataclass
class EpochContext:
    """What ``Algorithm.on_epoch`` may use: the data, the sampler, and whole-split prediction."""

    epoch: int
    step: int
    final: bool
    dataset: GroupDataset
    sampler: Sampler
    device: torch.device
    eval_batch_size: int
    out_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)  # logged in the next record
    args: RunArgs | None = None  # the run's length, for ``start_stage`` (the trainer sets it)
    schedule: Schedule | None = None  # set by ``start_stage``; the run takes it after the hook

    def predict(self, algorithm: nn.Module, split: str = "train") -> Tensor:
        return predict_split(algorithm, self.dataset.splits[split], self.eval_batch_size, self.device)

    def set_sample_weights(self, weights: Tensor) -> None:
        """From now on draw training examples with replacement, P(i) ∝ weights[i] (JTT's stage
        2).  The run takes ``self.sampler`` back after the hook and checkpoints its weights."""
        self.sampler = WeightedSampler.like(self.sampler, weights)

    def start_stage(self, steps_per_epoch: int, epochs: float | None = None) -> int:
        """From this step on an epoch is ``steps_per_epoch`` steps, and the run trains ``epochs``
        more epochs; None: its whole length again (``--steps`` steps, or ``--epochs`` epochs of
        the new length), as JTT's final model does.  Returns the steps of the new stage."""
        steps = (total_steps(self.args, steps_per_epoch) if epochs is None
                 else max(1, round(epochs * steps_per_epoch)))
        self.schedule = Schedule(steps_per_epoch, self.step + steps, self.step, self.epoch)
        return steps
