"""MF-Dominoes (docs/METHODS.md §D.7) on the real MNIST / FashionMNIST files.

Generated into a temporary cache beside symlinks to the real files (conftest's ``real_data_dir``
skips where they are missing).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainbed_sc.datasets import load_dataset, sources
from domainbed_sc.datasets import mf_dominoes as mf
from domainbed_sc.errors import UserError

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def data_dir(real_data_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("data")
    for name in ("MNIST", "FashionMNIST"):
        if not (real_data_dir / name / "raw").exists():
            pytest.skip(f"{name} not found under {real_data_dir}")
        (tmp / name).symlink_to(real_data_dir / name)
    (tmp / "cache").mkdir()
    return tmp


@pytest.fixture(scope="module")
def ds(data_dir):
    return load_dataset("mf_dominoes", {}, 0, data_dir)


@pytest.fixture(scope="module")
def raw(data_dir):
    return {(kind, train): getattr(sources, kind)(data_dir, train)
            for kind in ("mnist", "fashion_mnist") for train in (True, False)}


def test_training_split_is_completely_correlated(ds):
    train = ds.splits["train"]
    assert torch.equal(train.s, train.y)
    counts = ds.train_group_counts().tolist()
    assert counts[1] == counts[2] == 0 and counts[0] > 0 and counts[3] > 0


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_splits_have_s_independent_of_y(ds, split):
    sp = ds.splits[split]
    counts = torch.bincount(sp.g, minlength=4)
    assert (counts > 0).all()
    assert int(counts.max() - counts.min()) <= 1  # each class halved between the digits
    # no association: accuracy of "predict y from s" is chance
    assert abs((sp.s == sp.y).double().mean().item() - 0.5) < 0.01


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_images_are_the_digit_over_the_fashion_item(ds, raw, split):
    """Rows 0-27 are the MNIST digit of class s, rows 28-55 the FashionMNIST dress/coat of y,
    both from the matching source split."""
    train = split != "test"
    (m_x, m_y), (f_x, f_y) = raw["mnist", train], raw["fashion_mnist", train]
    sp = ds.splits[split]
    x = sp.x[:, 0]
    m_idx, f_idx = ds.mnist_idx[split], ds.fashion_idx[split]
    assert tuple(sp.x.shape[1:]) == ds.input_shape == (1, 56, 28) and sp.x.dtype == torch.uint8
    assert torch.equal(x[:, :28], m_x[m_idx]) and torch.equal(x[:, 28:], f_x[f_idx])
    assert torch.equal(m_y[m_idx], torch.tensor(mf.DIGITS)[sp.s])
    assert torch.equal(f_y[f_idx], torch.tensor(mf.FASHION_CLASSES)[sp.y])


def test_splits_share_no_image(ds):
    """val is held out of FashionMNIST-train and MNIST-train; test comes from their test sets."""
    assert not set(ds.fashion_idx["train"].tolist()) & set(ds.fashion_idx["val"].tolist())
    assert not set(ds.mnist_idx["train"].tolist()) & set(ds.mnist_idx["val"].tolist())
    n_val = len(ds.splits["val"])
    assert n_val == int(6000 * 0.1) * 2 and len(ds.splits["train"]) == 12000 - n_val
    assert len(ds.splits["test"]) == 2000  # every FashionMNIST-test dress and coat, once
    assert len(set(ds.fashion_idx["test"].tolist())) == 2000


def test_data_seed_redraws_and_cache_reproduces(data_dir, ds):
    again = load_dataset("mf_dominoes", {}, 0, data_dir)
    other = load_dataset("mf_dominoes", {}, 1, data_dir)
    assert torch.equal(again.splits["val"].x, ds.splits["val"].x)
    assert not torch.equal(other.fashion_idx["val"], ds.fashion_idx["val"])
    assert not torch.equal(other.splits["test"].s, ds.splits["test"].s)


def test_bad_val_fraction_is_a_user_error(data_dir):
    with pytest.raises(UserError, match="val_fraction"):
        load_dataset("mf_dominoes", {"val_fraction": 1.5}, 0, data_dir)
