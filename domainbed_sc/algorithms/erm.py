"""ERM: mean cross-entropy (docs/METHODS.md §A.1).  Also the base class of most other algorithms."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..datasets.base import Batch
from . import register_algorithm
from .base import Algorithm, TaskInfo


@register_algorithm("ERM")
class ERM(Algorithm):
    packable = True

    def __init__(self, task: TaskInfo, hparams):
        super().__init__(task, hparams)
        self.featurizer = self.make_featurizer()
        self.classifier = nn.Linear(self.featurizer.n_outputs, task.num_classes)
        self.network = nn.Sequential(self.featurizer, self.classifier)
        self.optimizer = self.make_optimizer(self.network.parameters())
        self.scheduler = self.make_scheduler(self.optimizer)

    def step(self, loss: Tensor) -> None:
        """One step of ERM's optimizer and scheduler on ``loss`` (its subclasses' too)."""
        self.step_optimizer(loss, self.optimizer, self.scheduler)

    def loss(self, batches: list[Batch]) -> tuple[Tensor, dict[str, Tensor]]:
        b = Batch.cat(batches)
        loss = F.cross_entropy(self.predict(b.x), b.y)
        return loss, {"loss": loss.detach()}

    def update(self, batches: list[Batch]) -> dict[str, Tensor]:
        loss, logs = self.loss(batches)
        self.step(loss)
        return logs

    def predict(self, x: Tensor) -> Tensor:
        return self.network(x)
