"""A tiny synthetic dataset with a planted spurious attribute, for tests and quick checks.

Images are 2×8×8.  Channel 0 carries the label through a fixed ±1 pattern scaled by
``core_strength`` under unit noise (weak: a linear model reaches roughly 85-90%); channel 1 carries
the spurious attribute s through a strong uniform shift, so ERM leans on s.  In training s agrees with y
with probability ``correlation`` (per environment, so environment 1 is less spurious), in
``test`` the agreement is ``test_correlation``.  It provides s, g and e.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import register_dataset
from ..checks import at_least, between, non_negative, positive
from .base import DatasetArgs, GroupDataset, TensorSplit, arg


@dataclass(frozen=True)
class ToyArgs(DatasetArgs):
    n_train: int = arg(512, int, at_least(2))  # two environments, alternating
    n_test: int = arg(256, int, positive)
    correlation: float = arg(0.9, float, between(0, 1, False, False))
    test_correlation: float = arg(0.1, float, between(0, 1, False, False))
    noise: float = arg(1.0, float, non_negative)
    core_strength: float = arg(0.15, float, non_negative)


@register_dataset("toy")
class Toy(GroupDataset):
    Args = ToyArgs
    num_classes = 2
    input_shape = (2, 8, 8)
    provides = frozenset({"s", "g", "e"})
    val_split = "val"
    id_split = "val"
    ood_split = "test"
    default_hparams = {"arch": "mlp"}

    def __init__(self, data_dir, args: ToyArgs, data_seed: int):
        super().__init__(data_dir, args, data_seed)
        self.num_attributes = 2
        gen = torch.Generator().manual_seed(data_seed)
        pattern = torch.randn(8, 8, generator=gen).sign()
        n_val = max(args.n_train // 4, 8)
        # env 0 follows `correlation`, env 1 is halfway to chance: environments differ in P(s|y)
        train_e = torch.arange(args.n_train) % 2
        train_p = torch.where(train_e == 0, args.correlation, (args.correlation + 0.5) / 2)
        self.splits = {
            "train": self._make(args.n_train, train_p, train_e, pattern, gen),
            "val": self._make(n_val, torch.full((n_val,), args.correlation), None, pattern, gen),
            "test": self._make(args.n_test, torch.full((args.n_test,), args.test_correlation),
                               None, pattern, gen),
        }

    def _make(self, n, p_agree, e, pattern, gen) -> TensorSplit:
        y = torch.randint(0, 2, (n,), generator=gen)
        agree = torch.rand(n, generator=gen) < p_agree
        s = torch.where(agree, y, 1 - y)
        x = torch.randn(n, 2, 8, 8, generator=gen) * self.args.noise
        x[:, 0] += (2 * y - 1).float()[:, None, None] * pattern * self.args.core_strength
        x[:, 1] += (2 * s - 1).float()[:, None, None] * 2.0
        return TensorSplit(x, y, s, e, num_attributes=self.num_attributes)
