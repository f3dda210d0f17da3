"""CachedTensorDataset (datasets/cached.py): build once, then load; what the cache holds is what
the dataset shows; the cache keys of the generated datasets are those of earlier releases, so
their existing cache entries are reused (docs/METHODS.md §P.1)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from domainbed_sc.cache import atomic_torch_save, stable_hash
from domainbed_sc.checks import positive
from domainbed_sc.datasets import DATASETS, load_dataset
from domainbed_sc.datasets.base import DatasetArgs, arg
from domainbed_sc.datasets.cached import CachedTensorDataset


@dataclass(frozen=True)
class CountArgs(DatasetArgs):
    n: int = arg(4, int, positive)


class Counting(CachedTensorDataset):
    Args = CountArgs
    num_classes = 2
    input_shape = (1, 2, 2)
    provides = frozenset({"s", "g"})
    builds = 0

    def configure(self) -> None:
        self.num_attributes = 3

    def generate(self):
        type(self).builds += 1
        n = self.args.n
        split = {"x": torch.full((n, 1, 2, 2), self.data_seed, dtype=torch.uint8),
                 "y": torch.arange(n) % 2, "s": torch.arange(n) % 3, "origin": torch.arange(n) * 10}
        return {"train": split, "test": {k: v[:2] for k, v in split.items()},
                "table": torch.eye(2)}


def test_built_once_per_key_and_extras_become_attributes(tmp_path):
    with DATASETS.temporary("counting_for_test", Counting):
        first = load_dataset("counting_for_test", {"n": 4}, 3, tmp_path)
        again = load_dataset("counting_for_test", {"n": 4}, 3, tmp_path)
        load_dataset("counting_for_test", {"n": 4}, 4, tmp_path)  # another seed: another entry
    assert Counting.builds == 2
    key = {"n": 4, "data_seed": 3, "version": 1}
    assert (tmp_path / "cache" / f"counting_for_test-{stable_hash(key)}.pt").exists()
    for ds in (first, again):
        assert ds.num_attributes == 3 and list(ds.splits) == ["train", "test"]
        assert torch.equal(ds.splits["train"].g, ds.splits["train"].y * 3 + ds.splits["train"].s)
        assert (ds.splits["train"].e == -1).all()
        assert torch.equal(ds.origin["test"], torch.tensor([0, 10]))
        assert torch.equal(ds.table, torch.eye(2))


# (dataset, arguments, seed) -> the key dict each dataset module built by hand before the base
OLD_KEYS = {
    ("cmnist", 5): {"variant": "domainbed", "holdout_fraction": 0.2, "test_env": 2,
                    "val_fraction": 0.1, "data_seed": 5, "version": 1},
    ("mnist_cifar", 5): {"n_backgrounds": 8, "mask_threshold": 0.5, "data_seed": 5, "version": 1},
    ("mnist_mp", 5): {"resolution": 28, "version": 1},  # seed-independent
}


@pytest.mark.parametrize("name,seed", OLD_KEYS)
def test_an_existing_cache_entry_is_read_without_the_raw_files(name, seed, tmp_path):
    """An entry written under the old key loads in a data dir without MNIST or CIFAR-10."""
    split = {"x": torch.zeros((3, 1, 1, 1), dtype=torch.uint8), "y": torch.tensor([0, 1, 0]),
             "s": torch.tensor([0, 1, -1]), "digit": torch.tensor([1, 7, 2]),
             "bg_id": torch.tensor([4, 5, 6]), "mnist_idx": torch.tensor([0, 1, 2])}
    atomic_torch_save({"train": split, "bg_sets": torch.zeros((10, 8), dtype=torch.long)},
                      tmp_path / "cache" / f"{name}-{stable_hash(OLD_KEYS[name, seed])}.pt")
    ds = load_dataset(name, {}, seed, tmp_path)
    assert torch.equal(ds.splits["train"].y, split["y"])
