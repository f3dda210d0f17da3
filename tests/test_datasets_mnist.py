"""MNIST-CIFAR, MNIST-MP and CMNIST (docs/METHODS.md §D.1–§D.3) on the real MNIST / CIFAR-10 files.

The data dir is ``$DOMAINBED_SC_DATA`` (else ./data, via conftest's ``real_data_dir``); tests
needing archives that are missing there are skipped.  Real-data tests carry ``real_data``.
Generated datasets go to a temporary cache (the data files are symlinked beside it), so every
session really generates once and then checks the cache hit; only the decoded CIFAR-10 cache is
reused from the real data dir when present.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domainbed_sc.hparams import seed_hash
from domainbed_sc.datasets import load_dataset, sources
from domainbed_sc.datasets import cmnist as cm
from domainbed_sc.datasets import mnist_cifar as mc
from domainbed_sc.datasets import mnist_mp as mp
from domainbed_sc.errors import UserError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
N_TEST = 3  # backgrounds per class in the MNIST-CIFAR fixture: small keeps counts checkable
SEED = 13   # the first thesis seed (B00)
THESIS_BIG_SEED = 4190266093  # B06, above 2**31


def _has_mnist(d: Path) -> bool:
    raw = d / "MNIST" / "raw"
    return all((raw / f).exists() or (raw / f"{f}.gz").exists() for f in MNIST_FILES)


def _has_cifar(d: Path) -> bool:
    return (d / "cifar10.npz").exists() or (d / "cifar-10-batches-py").exists()


@pytest.fixture(scope="module")
def data_dir(real_data_dir, tmp_path_factory) -> Path:
    real = real_data_dir
    if not _has_mnist(real):
        pytest.skip(f"MNIST archives not found under {real}/MNIST/raw (set $DOMAINBED_SC_DATA)")
    tmp = tmp_path_factory.mktemp("data")
    for entry in real.iterdir():
        if entry.name != "cache":
            (tmp / entry.name).symlink_to(entry)
    (tmp / "cache").mkdir()
    for cached in (real / "cache").glob("cifar10-*.pt"):  # decoding CIFAR-10 is not under test
        (tmp / "cache" / cached.name).symlink_to(cached)
    return tmp


def _load_twice(name, args, seed, data_dir):
    """(dataset from the cache hit, seconds the cache hit took); the first call generates."""
    load_dataset(name, args, seed, data_dir)
    start = time.perf_counter()
    ds = load_dataset(name, args, seed, data_dir)
    return ds, time.perf_counter() - start


def _check_contract(ds) -> None:
    for name, split in ds.splits.items():
        n = len(split)
        assert split.x.dtype == torch.uint8 and tuple(split.x.shape[1:]) == ds.input_shape
        for label in ("y", "s", "g", "e", "idx"):
            assert getattr(split, label).dtype == torch.long and len(getattr(split, label)) == n
        assert torch.equal(split.idx, torch.arange(n))
        known = split.s >= 0
        assert torch.equal(split.g[known], split.y[known] * ds.num_attributes + split.s[known])
        assert (split.g[~known] == -1).all()
        assert split.y.min() >= 0 and split.y.max() < ds.num_classes
        assert split.s.max() < ds.num_attributes
        batch = split.fetch(torch.tensor([0, n - 1]))
        assert batch.x.dtype == torch.float32 and 0 <= batch.x.min() and batch.x.max() <= 1
    for attr in ("val_split", "oracle_split", "id_split", "ood_split"):
        assert getattr(ds, attr) is None or getattr(ds, attr) in ds.splits


# -- MNIST-CIFAR (§D.1) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar_ds(real_data_dir, data_dir):
    if not _has_cifar(real_data_dir):
        pytest.skip(f"CIFAR-10 (cifar10.npz) not found under {real_data_dir}")
    return _load_twice("mnist_cifar", {"n_backgrounds": N_TEST}, SEED, data_dir)


@pytest.mark.real_data
def test_mnist_cifar_contract_and_sizes(cifar_ds):
    ds, _ = cifar_ds
    _check_contract(ds)
    assert ds.num_attributes == 10 * N_TEST and ds.provides == {"s", "g"}
    assert (ds.id_split, ds.ood_split, ds.val_split) == ("test_id", "test_ood", None)
    assert {k: len(v) for k, v in ds.splits.items()} == {
        "train": 54_210, "test_id": 8_920, "test_ood": 8_920}
    assert (torch.bincount(ds.splits["train"].y) == 5_421).all()
    assert (torch.bincount(ds.splits["test_id"].y) == 892).all()
    assert (ds.splits["test_ood"].s == -1).all()
    # ID and OOD tests hold the same MNIST-test digits, each used once
    assert torch.equal(ds.mnist_idx["test_id"], ds.mnist_idx["test_ood"])
    assert torch.equal(ds.splits["test_id"].y, ds.splits["test_ood"].y)
    assert len(ds.mnist_idx["train"].unique()) == 54_210


@pytest.mark.real_data
def test_mnist_cifar_background_pools(cifar_ds):
    ds, _ = cifar_ds
    sets = ds.bg_sets
    assert sets.shape == (10, N_TEST) and len(sets.unique()) == 10 * N_TEST  # disjoint B_c
    for name in ("train", "test_id"):
        split, bg = ds.splits[name], ds.bg_id[name]
        assert torch.equal(sets.flatten()[split.s], bg)  # s is the remapped background id
        for c in range(10):  # class c sees exactly its own N backgrounds
            assert set(bg[split.y == c].tolist()) == set(sets[c].tolist())
    ood = ds.bg_id["test_ood"]
    assert len(ood.unique()) == len(ood)  # one background of its own per OOD sample
    assert not np.isin(ood.numpy(), sets.numpy()).any()  # never seen in train/ID


@pytest.mark.real_data
def test_mnist_cifar_round_robin(cifar_ds):
    ds, _ = cifar_ds
    for name, n_c in (("train", 5_421), ("test_id", 892)):
        counts = torch.bincount(ds.splits[name].s, minlength=10 * N_TEST)
        assert counts.min() == n_c // N_TEST and counts.max() == -(-n_c // N_TEST)


@pytest.mark.real_data
def test_mnist_cifar_black_digits(cifar_ds, data_dir):
    ds, _ = cifar_ds
    cifar = sources.cifar10(data_dir)
    digits = {True: sources.mnist(data_dir, True)[0], False: sources.mnist(data_dir, False)[0]}
    for name, train in (("train", True), ("test_ood", False)):
        pick = torch.arange(0, len(ds.splits[name]), 37)
        padded = F.pad(digits[train][ds.mnist_idx[name][pick]], (2, 2, 2, 2))
        mask = (padded.float() / 255 > 0.5).unsqueeze(1).expand(-1, 3, -1, -1)
        bg = mc.cifar_images(cifar, ds.bg_id[name][pick].numpy())
        x = ds.splits[name].x[pick]
        assert (x[mask] == 0).all()  # the digit is black
        assert torch.equal(x[~mask], bg[~mask])  # elsewhere the background is untouched


def test_stamp_digits_threshold():
    digits = torch.zeros(1, 28, 28, dtype=torch.uint8)
    digits[0, 0, :3] = torch.tensor([127, 128, 255], dtype=torch.uint8)  # 127/255 < 0.5 < 128/255
    out = mc.stamp_digits(digits, torch.full((1, 3, 32, 32), 200, dtype=torch.uint8), 0.5)
    assert out[0, :, 2, 2:5].tolist() == [[200, 0, 0]] * 3
    out = mc.stamp_digits(digits, torch.full((1, 3, 32, 32), 200, dtype=torch.uint8), 0.0)
    assert out[0, 0, 2, 2:5].tolist() == [0, 0, 0] and out[0, 0, 0, 0] == 200


def test_deal_round_robin_balances_every_class():
    y = np.repeat(np.arange(10), 23)
    slot = mc.deal_round_robin(y, 4, np.random.default_rng(0))
    counts = np.bincount(y * 4 + slot, minlength=40)
    assert set(counts.tolist()) == {5, 6}


@pytest.mark.real_data
def test_mnist_cifar_deterministic_and_seeded(cifar_ds, data_dir):
    ds, _ = cifar_ds
    again = mc.generate(data_dir, mc.MnistCifarArgs(N_TEST), SEED)  # bypasses the cache
    for name in ds.splits:
        assert torch.equal(again[name]["x"], ds.splits[name].x)
        assert torch.equal(again[name]["bg_id"], ds.bg_id[name])
    other = mc.generate(data_dir, mc.MnistCifarArgs(N_TEST), THESIS_BIG_SEED)  # > 2**31
    assert not torch.equal(other["bg_sets"], ds.bg_sets)
    assert not torch.equal(other["train"]["x"], ds.splits["train"].x)
    assert len(other["bg_sets"].unique()) == 10 * N_TEST


@pytest.mark.real_data
def test_mnist_cifar_cache_hit_is_fast(cifar_ds):
    assert cifar_ds[1] < 1.0


@pytest.mark.real_data
def test_mnist_cifar_bad_args(data_dir):
    for args in ({"n_backgrounds": 0}, {"mask_threshold": 1.0}, {"n_bg": 3}):
        with pytest.raises(UserError):
            load_dataset("mnist_cifar", args, SEED, data_dir)


# -- MNIST-MP (§D.2) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mp_ds(data_dir):
    return _load_twice("mnist_mp", {}, 0, data_dir)


@pytest.mark.real_data
def test_mnist_mp_contract_and_attributes(mp_ds):
    ds, seconds = mp_ds
    _check_contract(ds)
    assert seconds < 1.0
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 60_000, "val": 10_000,
                                                         "test": 10_000}
    assert ds.num_attributes == 11 and (ds.val_split, ds.id_split, ds.ood_split) == (
        "val", "val", "test")
    assert torch.equal(ds.splits["train"].s, ds.splits["train"].y)
    assert torch.equal(ds.splits["val"].s, ds.splits["val"].y)
    assert (ds.splits["test"].s == 10).all()
    assert torch.equal(ds.splits["val"].y, ds.splits["test"].y)


@pytest.mark.real_data
def test_mnist_mp_colours(mp_ds, data_dir):
    ds, _ = mp_ds
    assert mp.GREY.tolist() == pytest.approx([127.3] * 3, abs=1e-9)
    for name, train in (("train", True), ("val", False), ("test", False)):
        digits, labels = sources.mnist(data_dir, train)
        pick = torch.arange(0, len(labels), 29)
        d, y, x = digits[pick].double(), labels[pick], ds.splits[name].x[pick].double()
        colour = mp.GREY.expand(len(y), 3) if name == "test" else mp.COLOURS[y]
        exact = d.unsqueeze(1) * colour[:, :, None, None] / 255
        assert (x - exact).abs().max() <= 0.5  # the documented uint8 rounding
        full = (d == 255).unsqueeze(1).expand_as(x)  # a full-intensity pixel is the colour
        want = colour.round()[:, :, None, None].expand_as(x)
        assert full.any() and torch.equal(x[full], want[full])
        assert (x[(d == 0).unsqueeze(1).expand_as(x)] == 0).all()  # black background


def test_mnist_mp_resolution_32():
    digits = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    x = mp.colourise(digits, mp.COLOURS[torch.tensor([0, 9])], 32)
    assert x.shape == (2, 3, 32, 32) and x[:, :, :2].sum() == 0 and x[:, :, :, -2:].sum() == 0
    assert x[0, :, 16, 16].tolist() == [255, 127, 127] and x[1, :, 2, 2].tolist() == [0, 255, 0]


@pytest.mark.real_data
def test_mnist_mp_bad_resolution(data_dir):
    with pytest.raises(UserError):
        load_dataset("mnist_mp", {"resolution": 30}, 0, data_dir)


# -- CMNIST (§D.3) -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cmnist_ds(data_dir):
    return _load_twice("cmnist", {}, 0, data_dir)


@pytest.fixture(scope="module")
def chroma_ds(data_dir):
    return _load_twice("cmnist", {"variant": "chroma"}, 0, data_dir)


def _rates(y, s, digit):
    """(label-noise rate, colour-flip rate)."""
    return ((digit < 5).long() != y).double().mean().item(), (s != y).double().mean().item()


@pytest.mark.real_data
def test_cmnist_domainbed_environments(cmnist_ds):
    ds, seconds = cmnist_ds
    _check_contract(ds)
    assert seconds < 1.0 and ds.provides == {"s", "g", "e"} and ds.num_envs == 2
    assert (ds.val_split, ds.oracle_split, ds.id_split, ds.ood_split) == (
        "val", "oracle_val", "val", "test")
    e = torch.cat([sp.e for sp in ds.splits.values()])
    sizes = torch.bincount(e).tolist()
    assert sum(sizes) == 70_000 and all(abs(n - 70_000 / 3) < 1 for n in sizes)
    for env, size in enumerate(sizes):  # 80/20 in/out, DomainBed's int(len * 0.2)
        in_split, out_split = ("train", "val") if env < 2 else ("test", "oracle_val")
        assert (ds.splits[out_split].e == env).sum() == int(size * 0.2)
        assert (ds.splits[in_split].e == env).sum() == size - int(size * 0.2)
    for env, p in enumerate(cm.ENV_P):
        parts = [(sp.y[sp.e == env], sp.s[sp.e == env], ds.digit[n][sp.e == env])
                 for n, sp in ds.splits.items()]
        noise, flip = _rates(*(torch.cat(t) for t in zip(*parts)))
        assert noise == pytest.approx(0.25, abs=0.015) and flip == pytest.approx(p, abs=0.015)


@pytest.mark.real_data
def test_cmnist_images_keep_only_the_colour_channel(cmnist_ds):
    ds, _ = cmnist_ds
    x, s = ds.splits["test"].x, ds.splits["test"].s
    rows = torch.arange(len(x))
    assert (x[rows, 1 - s] == 0).all() and (x[rows, s].flatten(1).amax(1) > 0).all()


def _domainbed_reference(data_dir: Path, seed: int, holdout: float = 0.2):
    """DomainBed's ColoredMNIST + train.py's in/out split, transcribed, on the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        (tr_x, tr_y), (te_x, te_y) = sources.mnist(data_dir, True), sources.mnist(data_dir, False)
        images, labels = torch.cat((tr_x, te_x)), torch.cat((tr_y, te_y))
        shuffle = torch.randperm(len(images))
        images, labels = images[shuffle], labels[shuffle]
        envs = []
        for i, p in enumerate([0.1, 0.2, 0.9]):
            im, lab = images[i::3], labels[i::3]
            lab = (lab < 5).float()
            lab = (lab - (torch.rand(len(lab)) < 0.25).float()).abs()
            colors = (lab - (torch.rand(len(lab)) < p).float()).abs()
            im = torch.stack([im, im], dim=1)
            im[torch.tensor(range(len(im))), (1 - colors).long(), :, :] *= 0
            keys = list(range(len(im)))
            np.random.RandomState(seed_hash(seed, i)).shuffle(keys)
            n_out = int(len(im) * holdout)
            envs.append({"x": im, "y": lab.long(), "out": keys[:n_out], "in": keys[n_out:]})
    return envs


@pytest.mark.real_data
def test_cmnist_matches_domainbed(cmnist_ds, data_dir):
    ds, _ = cmnist_ds
    ref = _domainbed_reference(data_dir, 0)
    want_train = torch.cat([ref[i]["x"][ref[i]["in"]] for i in (0, 1)])
    assert torch.equal(ds.splits["train"].x, want_train)
    assert torch.equal(ds.splits["val"].y, torch.cat([ref[i]["y"][ref[i]["out"]] for i in (0, 1)]))
    assert torch.equal(ds.splits["test"].x, ref[2]["x"][ref[2]["in"]])
    assert torch.equal(ds.splits["oracle_val"].y, ref[2]["y"][ref[2]["out"]])


@pytest.mark.real_data
def test_cmnist_test_env_remaps_environments(data_dir):
    data = cm.generate_domainbed(data_dir, cm.CMNISTArgs(test_env=0), 0)
    assert set(data["train"]["e"].tolist()) == {0, 1} and (data["test"]["e"] == 2).all()
    tr = data["train"]
    flips = [(tr["s"] != tr["y"])[tr["e"] == e].double().mean().item() for e in (0, 1)]
    assert flips == pytest.approx([0.2, 0.9], abs=0.015)  # environments 1 and 2, in order


@pytest.mark.real_data
def test_cmnist_chroma_variant(chroma_ds):
    ds, seconds = chroma_ds
    _check_contract(ds)
    assert seconds < 1.0
    assert ds.provides == {"s", "g"} and cm.CMNIST.provides == {"s", "g", "e"}
    assert (ds.val_split, ds.oracle_split, ds.id_split, ds.ood_split) == (
        "val", None, "test_in", "test_out")
    assert {k: len(v) for k, v in ds.splits.items()} == {
        "train": 54_000, "val": 6_000, "test_in": 10_000, "test_out": 10_000}
    assert all((sp.e == -1).all() for sp in ds.splits.values())
    tol = {"train": 0.01, "val": 0.025, "test_in": 0.02, "test_out": 0.02}
    for name, p in (("train", 0.1), ("val", 0.1), ("test_in", 0.1), ("test_out", 0.9)):
        sp = ds.splits[name]
        noise, flip = _rates(sp.y, sp.s, ds.digit[name])
        assert noise == pytest.approx(0.25, abs=tol[name])
        assert flip == pytest.approx(p, abs=tol[name])
    assert torch.equal(ds.splits["test_in"].y, ds.splits["test_out"].y)  # paired tests


@pytest.mark.real_data
def test_cmnist_bad_args(data_dir):
    for args in ({"variant": "irm"}, {"test_env": 3}, {"holdout_fraction": 1.5}):
        with pytest.raises(UserError) as err:
            load_dataset("cmnist", args, 0, data_dir)
        assert "\n" not in str(err.value)
