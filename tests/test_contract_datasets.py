"""The data contract (datasets/base.py, docs/METHODS.md §P.1), for every registered dataset.

Each dataset is built the cheapest way the tests have: toy from its own small arguments, the
MNIST / CIFAR-10 datasets from the real files (``real_data``; generated datasets already in the
real cache are read through symlinks, never written there), the image datasets from the
generated fixtures of fixtures_images.py.  A registered dataset with no builder here fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures_images import make_celeba, make_spawrious, make_waterbirds

from domainbed_sc.datasets import DATASETS, LABELS, load_dataset

IMAGES = {"image_size": 32, "num_workers": 0}


@pytest.fixture(scope="module")
def mnist_dir(real_data_dir, tmp_path_factory) -> Path:
    """The real data files and cache entries, symlinked: new cache entries land in tmp."""
    tmp = tmp_path_factory.mktemp("data")
    for entry in real_data_dir.iterdir():
        if entry.name != "cache":
            (tmp / entry.name).symlink_to(entry)
    (tmp / "cache").mkdir()
    for cached in (real_data_dir / "cache").glob("*.pt"):
        (tmp / "cache" / cached.name).symlink_to(cached)
    return tmp


def real(args):
    return lambda name, request, tmp: load_dataset(name, args, 0, request.getfixturevalue("mnist_dir"))


#: name -> (builder(name, request, tmp_path), reads the real data)
BUILDERS = {
    "toy": (lambda name, request, tmp: load_dataset(name, {"n_train": 64, "n_test": 32}, 0, tmp),
            False),
    "mnist_cifar": (real({}), True),
    "mnist_mp": (real({}), True),
    "cmnist": (real({}), True),
    "mf_dominoes": (real({}), True),
    "waterbirds": (lambda name, request, tmp: load_dataset(name, IMAGES, 0, make_waterbirds(tmp)),
                   False),
    "celeba": (lambda name, request, tmp: load_dataset(name, IMAGES, 0, make_celeba(tmp)), False),
    "spawrious": (lambda name, request, tmp: load_dataset(
        name, {**IMAGES, "per_folder": 10}, 0, make_spawrious(tmp, per_folder=10)), False),
}

DESCRIBE_KEYS = {"name", "args", "data_seed", "num_classes", "num_attributes", "num_groups",
                 "num_envs", "input_shape", "provides", "splits", "val_split", "oracle_split",
                 "id_split", "ood_split"}


def params():
    return [pytest.param(n, marks=[pytest.mark.real_data] if BUILDERS.get(n, (0, False))[1] else [])
            for n in DATASETS.names()]


def build(name, request, tmp_path):
    if name not in BUILDERS:
        pytest.fail(f"dataset {name} has no builder in tests/test_contract_datasets.py BUILDERS")
    return BUILDERS[name][0](name, request, tmp_path)


@pytest.fixture(scope="module", params=params())
def dataset(request, tmp_path_factory):
    return build(request.param, request, tmp_path_factory.mktemp(request.param))


def check_labels(ds, name, split) -> None:
    n = len(split)
    assert n > 0, name
    for label in ("y", "s", "g", "e", "idx"):
        t = getattr(split, label)
        assert t.dtype == torch.long and t.shape == (n,), (name, label)
    assert torch.equal(split.idx, torch.arange(n))
    assert 0 <= split.y.min() and split.y.max() < ds.num_classes, name
    assert -1 <= split.s.min() and split.s.max() < ds.num_attributes, name
    known = split.s >= 0
    assert torch.equal(split.g[known], split.y[known] * ds.num_attributes + split.s[known]), name
    assert (split.g[~known] == -1).all(), name
    assert -1 <= split.e.min(), name  # eval splits may name held-out environments (>= num_envs)


def check_fetch(ds, name, split) -> None:
    ends = torch.tensor([0, len(split) - 1])
    batch = split.fetch(ends)
    assert batch.x.dtype == torch.float32 and tuple(batch.x.shape) == (2, *ds.input_shape), name
    assert torch.isfinite(batch.x).all(), name
    for label in ("y", "s", "g", "e", "idx"):
        assert torch.equal(getattr(batch, label), getattr(split, label)[ends]), (name, label)


def test_splits_hold_the_contract_labels(dataset):
    assert "train" in dataset.splits
    for name, split in dataset.splits.items():
        check_labels(dataset, name, split)
        check_fetch(dataset, name, split)


def test_provides_is_what_the_training_split_holds(dataset):
    train = dataset.splits["train"]
    for label in LABELS:
        values = getattr(train, label)
        if label in dataset.provides:
            assert (values >= 0).all(), f"{label} provided but unknown on some training examples"
        else:
            assert (values == -1).all(), f"{label} not provided but present"
    if "e" in dataset.provides:  # environments 0 .. num_envs - 1, none empty
        assert set(train.e.tolist()) == set(range(dataset.num_envs))
    else:
        assert dataset.num_envs == 0


def test_describe_matches_the_dataset(dataset):
    d = dataset.describe()
    assert set(d) == DESCRIBE_KEYS
    json.dumps(d, allow_nan=False)  # records are strict JSON
    assert d["splits"] == {k: len(v) for k, v in dataset.splits.items()}
    assert d["num_groups"] == d["num_classes"] * d["num_attributes"]
    assert d["provides"] == sorted(dataset.provides) and set(d["provides"]) <= set(LABELS)
    assert tuple(d["input_shape"]) == tuple(dataset.input_shape)
    for role in ("val_split", "oracle_split", "id_split", "ood_split"):
        assert d[role] is None or d[role] in dataset.splits, role


def test_train_group_counts_count_the_training_groups(dataset):
    counts, g = dataset.train_group_counts(), dataset.splits["train"].g
    assert counts.shape == (dataset.num_groups,)
    assert int(counts.sum()) == int((g >= 0).sum())
    for group in g[g >= 0].unique().tolist():
        assert int(counts[group]) == int((g == group).sum())


def test_a_dataset_without_a_builder_fails_by_name(request, tmp_path):
    from domainbed_sc.datasets.toy import Toy

    class Unbuildable(Toy):
        pass

    with DATASETS.temporary("unbuildable_for_contract_test", Unbuildable):
        assert "unbuildable_for_contract_test" in [p.values[0] for p in params()]
        with pytest.raises(pytest.fail.Exception, match="unbuildable_for_contract_test has no"):
            build("unbuildable_for_contract_test", request, tmp_path)


@pytest.mark.parametrize("fault", ["g", "provides"])
def test_the_contract_checks_catch_a_broken_dataset(tmp_path, fault):
    """The checks above fail on a dataset whose g is not y·S + s, or that provides a label
    its training split does not hold."""
    ds = load_dataset("toy", {"n_train": 16, "n_test": 8}, 0, tmp_path)
    train = ds.splits["train"]
    with pytest.raises(AssertionError):
        if fault == "g":
            train.g = train.g.flip(0)
            check_labels(ds, "train", train)
        else:
            train.e = torch.full_like(train.e, -1)
            test_provides_is_what_the_training_split_holds(ds)
