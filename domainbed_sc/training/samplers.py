"""Training samplers (docs/METHODS.md §P.5): which example indices make each step's minibatch.

Every sampler is a pure function of (seed, step, weights): ``indices(step)`` recomputes what it
needs from a generator seeded by the step or epoch.  So a resumed run draws exactly the batches
an uninterrupted one would, prefetching workers can run ahead freely, and the only state to
checkpoint is the weights (which JTT changes between its stages).

Each kind of sampler the ``sampler`` hyperparameter names is one ``@register_sampler`` class:
``needs`` is the training label it draws by (the trainer checks datasets provide it),
``from_labels`` builds it from the training split's labels.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..hparams import seed_hash
from ..registry import Registry


def _generator(*key: Any) -> torch.Generator:
    return torch.Generator().manual_seed(seed_hash(*key))


class Sampler:
    #: the training label the sampler draws by ("g", "e"; datasets/base.py LABELS), None: none
    needs: str | None = None
    #: the training environments it needs (checked once the data are loaded)
    min_envs: int = 0

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n = n
        self.batch_size = min(batch_size, n)
        self.seed = seed
        self.steps_per_epoch = max(1, n // self.batch_size)

    def indices(self, step: int) -> list[Tensor]:
        raise NotImplementedError

    def batch_sizes(self) -> list[int]:
        """Sizes of the index tensors ``indices`` returns (one per environment for uniform_env)."""
        return [self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def from_labels(cls, train_g: Tensor, train_e: Tensor, batch_size: int, seed: int) -> "Sampler":
        raise NotImplementedError


SAMPLERS: Registry[type[Sampler]] = Registry("sampler")
register_sampler = SAMPLERS.register


@register_sampler("random")
class RandomSampler(Sampler):
    """i.i.d. shuffling: a fresh permutation every epoch, full batches only."""

    def __init__(self, n: int, batch_size: int, seed: int):
        super().__init__(n, batch_size, seed)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> list[Tensor]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=_generator(self.seed, epoch))
        return [self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]]

    @classmethod
    def from_labels(cls, train_g: Tensor, train_e: Tensor, batch_size: int, seed: int) -> Sampler:
        return cls(len(train_g), batch_size, seed)


class WeightedSampler(Sampler):
    """Draws each batch with replacement, P(i) ∝ weights[i] (uniform_group, JTT's upsampling)."""

    def __init__(self, weights: Tensor, batch_size: int, seed: int):
        super().__init__(len(weights), batch_size, seed)
        self.batch_size = batch_size  # drawn with replacement: may exceed the dataset size
        self.set_weights(weights)

    def set_weights(self, weights: Tensor) -> None:
        if len(weights) != self.n or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("sampling weights must be non-negative, one per example, not all 0")
        self.weights = weights.double().cpu()

    def indices(self, step: int) -> list[Tensor]:
        gen = _generator(self.seed, step)
        return [torch.multinomial(self.weights, self.batch_size, replacement=True, generator=gen)]

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set_weights(state["weights"])

    @classmethod
    def like(cls, sampler: Sampler, weights: Tensor) -> "WeightedSampler":
        """Weighted draws replacing ``sampler``: as many examples per step, same epoch length."""
        new = cls(weights, sum(sampler.batch_sizes()), sampler.seed)
        new.steps_per_epoch = sampler.steps_per_epoch
        return new


def group_weights(g: Tensor) -> Tensor:
    """Per-example weight 1/n_{g(i)}: every non-empty group is drawn equally often."""
    counts = torch.bincount(g)
    return 1.0 / counts[g].double()


@register_sampler("uniform_group")
class GroupSampler(WeightedSampler):
    """Every non-empty group (y, s) equally often (GroupDRO's upsampling, Sagawa et al. 2020)."""

    needs = "g"

    @classmethod
    def from_labels(cls, train_g: Tensor, train_e: Tensor, batch_size: int, seed: int) -> Sampler:
        return cls(group_weights(train_g), batch_size, seed)


@register_sampler("uniform_env")
class EnvSampler(Sampler):
    """DomainBed's uniform_env: one batch of ``batch_size`` from each training environment."""

    needs = "e"
    min_envs = 2

    def __init__(self, e: Tensor, batch_size: int, seed: int):
        super().__init__(len(e), batch_size, seed)
        self.envs = [torch.nonzero(e == k).flatten() for k in range(int(e.max()) + 1)]
        self.envs = [idx for idx in self.envs if len(idx) > 0]
        self.samplers = [RandomSampler(len(idx), batch_size, seed_hash(seed, k))
                         for k, idx in enumerate(self.envs)]
        self.steps_per_epoch = min(s.steps_per_epoch for s in self.samplers)

    def indices(self, step: int) -> list[Tensor]:
        return [idx[s.indices(step)[0]] for idx, s in zip(self.envs, self.samplers)]

    def batch_sizes(self) -> list[int]:
        return [s.batch_size for s in self.samplers]

    @classmethod
    def from_labels(cls, train_g: Tensor, train_e: Tensor, batch_size: int, seed: int) -> Sampler:
        return cls(train_e, batch_size, seed)


def restore_sampler(sampler: Sampler, state: dict[str, Any]) -> Sampler:
    """``sampler`` as a checkpoint left it.  An epoch hook may have swapped in weighted draws
    (JTT's stage 2); then the state holds weights the run's own sampler kind has no use for."""
    if "weights" in state and not isinstance(sampler, WeightedSampler):
        sampler = WeightedSampler.like(sampler, state["weights"])
    sampler.load_state_dict(state)
    return sampler


#: how a sampler's missing label reads in its error
_LABEL_TEXT = {"g": "group labels", "e": "an environment label"}


def make_sampler(kind: str, train_g: Tensor, train_e: Tensor, batch_size: int, seed: int) -> Sampler:
    cls = SAMPLERS.get(kind)
    train_g, train_e = train_g.cpu(), train_e.cpu()
    if cls.needs is not None and bool(({"g": train_g, "e": train_e}[cls.needs] < 0).any()):
        raise UserError(f"sampler {kind} needs {_LABEL_TEXT[cls.needs]} on every training example")
    return cls.from_labels(train_g, train_e, batch_size, seed)
