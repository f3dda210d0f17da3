"""The base of generated tensor datasets: build once per generation arguments (and data seed),
cache in ``<data_dir>/cache`` (cache.py), load from there afterwards (docs/METHODS.md §P.1).

A subclass declares the raw ``files`` it reads (files.py) and implements ``generate``, which
returns ``{split: {"x", "y", optional "s", "e", other per-example tensors}}`` plus, at the top
level, any other tensors.  The base turns every split into a ``TensorSplit``; every other
per-example tensor ``k`` becomes ``self.k[split]`` and every top-level tensor ``self.k`` (e.g.
CMNIST's ``digit``, MNIST-CIFAR's ``bg_id`` and ``bg_sets``), so what the cache holds is what
the dataset shows.  ``configure`` sets the facts that depend on the arguments (num_attributes,
input_shape, split roles) before anything is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from ..cache import cached_tensors
from .base import DatasetArgs, GroupDataset, TensorSplit
from .sources import cache_dir

SPLIT_KEYS = ("x", "y", "s", "e")


class CachedTensorDataset(GroupDataset):
    #: bumped whenever generation changes, so stale cache entries are never reused
    version: ClassVar[int] = 1
    #: False where the data do not depend on the data seed (one cache entry for every seed)
    seeded: ClassVar[bool] = True

    def __init__(self, data_dir: Path, args: DatasetArgs, data_seed: int):
        super().__init__(data_dir, args, data_seed)
        self.data_seed = int(data_seed)
        self.configure()
        data = cached_tensors(cache_dir(self.data_dir), self.name, self.cache_key(), self.generate)
        for name, value in data.items():
            if isinstance(value, Tensor):
                setattr(self, name, value)
            else:
                self._add_split(name, value)

    def configure(self) -> None:
        """Set the facts that depend on ``self.args`` (the default: none)."""

    def generate(self) -> dict[str, Any]:
        raise NotImplementedError

    def cache_key(self) -> dict[str, Any]:
        """The generation arguments, the data seed where it matters, and the version."""
        seed = {"data_seed": self.data_seed} if self.seeded else {}
        return {**self.args.generation(), **seed, "version": self.version}

    def _add_split(self, name: str, d: dict[str, Tensor]) -> None:
        self.splits[name] = TensorSplit(d["x"], d["y"], d.get("s"), d.get("e"),
                                        num_attributes=self.num_attributes)
        for key in d.keys() - set(SPLIT_KEYS):
            vars(self).setdefault(key, {})[name] = d[key]
