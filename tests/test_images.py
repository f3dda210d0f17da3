"""Waterbirds and Spawrious on tiny fixtures in their real layouts; the disk image pipeline; the
resumable downloader against a local HTTP server (tests never contact the internet).

Real-data checks at the end run where ``$DOMAINBED_SC_DATA`` holds the real Waterbirds /
Spawrious folders and say so when they skip.
"""
from __future__ import annotations

import hashlib
import math
import os
import socket
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from domainbed_sc import cli, download
from domainbed_sc.datasets import files, images, load_dataset
from domainbed_sc.datasets.sources import resolve_data_dir
from domainbed_sc.datasets.spawrious import BREEDS, LOCATIONS, environments
from domainbed_sc.datasets.waterbirds import ex2l_group_counts
from domainbed_sc.errors import UserError
from domainbed_sc.training.records import DONE, RESULTS, RunArgs, read_records
from domainbed_sc.training.trainer import RunOptions, train
from fixtures_images import (WATERBIRDS_COUNTS, WATERBIRDS_REAL_GROUPS, make_spawrious,
                             make_waterbirds, serve, tar_gz)

WB = {"image_size": 32, "num_workers": 0}
SP = {"image_size": 32, "num_workers": 0, "per_folder": 10}
# docs/METHODS.md §D.5's table again, per breed: (train locations, test locations), filler
SPEC_TABLE = {
    "o2o_easy": ({"bulldog": (["desert"], ["dirt"]), "dachshund": (["jungle"], ["snow"]),
                  "labrador": (["dirt"], ["desert"]), "corgi": (["snow"], ["jungle"])}, "beach"),
    "o2o_medium": ({"bulldog": (["mountain"], ["jungle"]), "dachshund": (["beach"], ["dirt"]),
                    "labrador": (["dirt"], ["beach"]), "corgi": (["jungle"], ["snow"])}, "desert"),
    "o2o_hard": ({"bulldog": (["jungle"], ["mountain"]), "dachshund": (["mountain"], ["snow"]),
                  "labrador": (["snow"], ["desert"]), "corgi": (["desert"], ["jungle"])}, "beach"),
    "m2m_easy": ({"bulldog": (["desert", "mountain"], ["dirt", "jungle"]),
                  "dachshund": (["mountain", "desert"], ["jungle", "dirt"]),
                  "labrador": (["dirt", "jungle"], ["mountain", "desert"]),
                  "corgi": (["jungle", "dirt"], ["desert", "mountain"])}, None),
    "m2m_medium": ({"bulldog": (["beach", "snow"], ["desert", "mountain"]),
                    "dachshund": (["snow", "beach"], ["mountain", "desert"]),
                    "labrador": (["mountain", "desert"], ["beach", "snow"]),
                    "corgi": (["desert", "mountain"], ["snow", "beach"])}, None),
    "m2m_hard": ({"bulldog": (["dirt", "jungle"], ["snow", "beach"]),
                  "dachshund": (["jungle", "dirt"], ["beach", "snow"]),
                  "labrador": (["snow", "beach"], ["dirt", "jungle"]),
                  "corgi": (["beach", "snow"], ["jungle", "dirt"])}, None),
}
# METHODS §D.4: per-split group counts (g0/g1/g2/g3) of the real data, and the eX2L environments
REAL_SPLITS = {"train": [3498, 184, 56, 1057], "val": [467, 466, 133, 133],
               "test": [2255, 2255, 642, 642]}
# eX2L App. B.6 group shares (g0..g3 = landbird/land, landbird/water, waterbird/land,
# waterbird/water) of Env 1 "land-centric" and Env 2 "balanced" (METHODS §D.4)
APP_B6 = ((0.6180, 0.1837, 0.0826, 0.1158), (0.4477, 0.3020, 0.0598, 0.1905))


@pytest.fixture(scope="module")
def wb_dir(tmp_path_factory) -> Path:
    return make_waterbirds(tmp_path_factory.mktemp("wb"))


@pytest.fixture(scope="module")
def wb_full_meta(tmp_path_factory) -> Path:
    """All 11,788 metadata rows with the real per-split group counts; empty image files."""
    counts = {(code, g // 2, g % 2): n
              for code, split in enumerate(REAL_SPLITS) for g, n in enumerate(REAL_SPLITS[split])}
    assert {(y, p): sum(n for (_, y2, p2), n in counts.items() if (y2, p2) == (y, p))
            for y in (0, 1) for p in (0, 1)} == WATERBIRDS_REAL_GROUPS
    return make_waterbirds(tmp_path_factory.mktemp("wb_full"), counts, images=False)


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory) -> Path:
    return make_spawrious(tmp_path_factory.mktemp("sp"), per_folder=10)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The local test server must be reached directly, whatever proxy the environment sets."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


def _group_counts(split, n_groups: int) -> list[int]:
    return torch.bincount(split.g, minlength=n_groups).tolist()


def _pooled(*splits):
    """(paths, y, s, e) of several splits together."""
    return ([p for sp in splits for p in sp.paths], torch.cat([sp.y for sp in splits]),
            torch.cat([sp.s for sp in splits]), torch.cat([sp.e for sp in splits]))


# -- Waterbirds ------------------------------------------------------------------------------
def test_waterbirds_standard_splits_follow_the_metadata(wb_dir):
    ds = load_dataset("waterbirds", WB, 0, wb_dir)
    root = wb_dir / "waterbirds_v1.0"
    meta = pd.read_csv(root / "metadata.csv")
    assert set(ds.splits) == {"train", "val", "test"}
    assert ds.provides == {"s", "g"} and ds.num_envs == 0 and ds.num_groups == 4
    assert ds.input_shape == (3, 32, 32) and not ds.small_images
    assert (ds.val_split, ds.id_split, ds.ood_split) == ("val", None, "test")  # no ID split
    for code, name in enumerate(("train", "val", "test")):
        split, rows = ds.splits[name], meta[meta["split"] == code]
        assert list(split.paths) == [str(root / f) for f in rows["img_filename"]]
        assert split.y.tolist() == rows["y"].tolist()
        assert split.s.tolist() == rows["place"].tolist()
        assert torch.equal(split.g, 2 * split.y + split.s)  # GroupDRO's g = 2·y + place
        assert (split.e == -1).all()
        assert _group_counts(split, 4) == [WATERBIRDS_COUNTS[(code, g // 2, g % 2)] for g in range(4)]


def test_waterbirds_real_split_counts_from_full_metadata(wb_full_meta):
    ds = load_dataset("waterbirds", WB, 0, wb_full_meta)
    assert {name: _group_counts(sp, 4) for name, sp in ds.splits.items()} == REAL_SPLITS
    assert ds.train_group_counts().tolist() == [3498, 184, 56, 1057]  # acc_adj (METHODS §P.3)


def _scaled_meta(tmp_path_factory, name: str, divisor: int) -> Path:
    """Metadata only (empty image files) with the real per-split group counts divided by
    ``divisor``: the proportion logic at the real size and at a smaller one."""
    counts = {(code, g // 2, g % 2): n // divisor
              for code, split in enumerate(REAL_SPLITS) for g, n in enumerate(REAL_SPLITS[split])}
    return make_waterbirds(tmp_path_factory.mktemp(name), counts, images=False)


@pytest.fixture(scope="module")
def wb_quarter_meta(tmp_path_factory) -> Path:
    return _scaled_meta(tmp_path_factory, "wb_quarter", 4)


def _img_ids(data_dir: Path, split) -> set[int]:
    """The metadata img_id of every image of a split."""
    root = data_dir / "waterbirds_v1.0"
    meta = pd.read_csv(root / "metadata.csv")
    by_path = dict(zip((str(root / f) for f in meta["img_filename"]), meta["img_id"]))
    return {by_path[p] for p in split.paths}


def _official(data_dir: Path, code: int) -> set[int]:
    meta = pd.read_csv(data_dir / "waterbirds_v1.0" / "metadata.csv")
    return set(meta.loc[meta["split"] == code, "img_id"])


def _half_up_counts(n: int) -> list[list[int]]:
    return [[math.floor(p * n + 0.5) for p in env] for env in APP_B6]


def test_ex2l_sizes_at_the_real_counts_are_the_largest_the_pool_allows():
    """METHODS §D.4: environments from official train + val at the largest size N that fits; the
    land-waterbird group (56 + 133) binds.  N found here by brute force."""
    pool = [a + b for a, b in zip(REAL_SPLITS["train"], REAL_SPLITS["val"])]

    def fits(n):
        return all(sum(col) <= have for col, have in zip(zip(*_half_up_counts(n)), pool))

    best = max(n for n in range(1, sum(pool)) if fits(n))
    assert ex2l_group_counts(pool) == _half_up_counts(best)
    assert best == 1329  # the size documented in the docstring and README
    over = [sum(col) for col in zip(*_half_up_counts(best + 1))]
    assert [g for g in range(4) if over[g] > pool[g]] == [2]  # waterbird on land binds


@pytest.mark.parametrize("meta", ["wb_full_meta", "wb_quarter_meta"])
def test_ex2l_envs_never_touch_the_test_split(meta, request):
    data_dir = request.getfixturevalue(meta)
    ds = load_dataset("waterbirds", {**WB, "variant": "ex2l_envs"}, 0, data_dir)
    train, val, test = (ds.splits[k] for k in ("train", "val", "test"))
    assert set(ds.splits) == {"train", "val", "test"} and ds.provides == {"s", "g", "e"}
    assert (ds.val_split, ds.id_split, ds.ood_split) == ("val", None, "test") and ds.num_envs == 2
    ids = {name: _img_ids(data_dir, ds.splits[name]) for name in ("train", "val", "test")}
    assert sum(map(len, ids.values())) == len(train) + len(val) + len(test)  # no repeats
    assert not (ids["train"] & ids["val"]) and not (ids["train"] | ids["val"]) & ids["test"]
    assert ids["test"] == _official(data_dir, 2)  # the official, within-class balanced test split
    counts = _group_counts(test, 4)
    assert counts[0] == counts[1] and counts[2] == counts[3]  # place independent of y per class
    paths, y, s, e = _pooled(train, val)
    env_ids = [_img_ids(data_dir, split) for split in (train, val)]
    assert not (_official(data_dir, 2) & set().union(*env_ids))
    for k, props in enumerate(APP_B6):  # App. B.6's group proportions, up to rounding
        g = (2 * y + s)[e == k]
        share = torch.bincount(g, minlength=4).double() / len(g)
        assert torch.allclose(share, torch.tensor(props, dtype=torch.double), atol=1 / len(g))
        n_out = int(0.2 * len(g))  # DomainBed's 20 % holdout of each environment selects
        assert int((val.e == k).sum()) == n_out and int((train.e == k).sum()) == len(g) - n_out
    sizes = [int((e == k).sum()) for k in (0, 1)]
    assert abs(sizes[0] - sizes[1]) <= 1  # both environments at the largest size that fits
    if meta == "wb_full_meta":
        assert sizes == [1329, 1328] and len(val) == 530


def test_ex2l_envs_depend_on_the_data_seed_only(wb_full_meta):
    def assignment(seed):
        ds = load_dataset("waterbirds", {**WB, "variant": "ex2l_envs"}, seed, wb_full_meta)
        train, val, test = (ds.splits[k] for k in ("train", "val", "test"))
        return ({p: (name, int(e)) for name, sp in (("train", train), ("val", val))
                 for p, e in zip(sp.paths, sp.e)}, list(test.paths))

    (first, test0), (again, _), (other, test1) = assignment(0), assignment(0), assignment(1)
    assert first == again
    assert first != other and Counter(first.values()) == Counter(other.values())
    assert test0 == test1


def test_waterbirds_missing_data_says_how_to_get_it(tmp_path, wb_dir):
    with pytest.raises(UserError, match="domainbed-sc download waterbirds"):
        load_dataset("waterbirds", WB, 0, tmp_path)
    broken = make_waterbirds(tmp_path / "broken", images=False)
    victim = next((broken / "waterbirds_v1.0").glob("*/*.jpg"))
    victim.unlink()
    with pytest.raises(UserError, match=r"1 of \d+ Waterbirds images .* not found.*download waterbirds"):
        load_dataset("waterbirds", WB, 0, broken)
    with pytest.raises(UserError, match="dataset argument variant: .ex2l. .expected one of standard, ex2l_envs"):
        load_dataset("waterbirds", {"variant": "ex2l"}, 0, wb_dir)
    no_minority = {(0, 0, 0): 20, (0, 0, 1): 20, (1, 1, 1): 20, (2, 1, 0): 3}  # g2 only in test
    sparse = make_waterbirds(tmp_path / "sparse", no_minority, images=False)
    with pytest.raises(UserError, match="too few train . val images"):
        load_dataset("waterbirds", {**WB, "variant": "ex2l_envs"}, 0, sparse)


# -- Spawrious -------------------------------------------------------------------------------
def _folder(path: str) -> tuple[int, str, str]:
    """(folder, location, breed) of an image path in the release layout."""
    folder, location, breed = Path(path).parts[-4:-1]
    return int(folder), location, breed


@pytest.mark.parametrize("challenge", sorted(SPEC_TABLE))
def test_spawrious_challenges_match_the_spec_table(sp_dir, challenge):
    ds = load_dataset("spawrious", {**SP, "challenge": challenge}, 0, sp_dir)
    routes, filler = SPEC_TABLE[challenge]
    paths, y, s, e = _pooled(ds.splits["train"], ds.splits["val"])
    test = ds.splits["test"]
    assert len(ds.splits["val"]) == 2 * int(40 * 0.2) and len(test) == 80
    for k in (0, 1):
        assert int((e == k).sum()) == 4 * 10  # 4·T per environment
    for breed, (train_locs, test_locs) in routes.items():
        label = BREEDS.index(breed)
        for k in (0, 1):
            got = Counter(_folder(p) for p, yi, ei in zip(paths, y, e) if yi == label and ei == k)
            if filler is not None:  # O2O: ⌊0.97T⌋ = 9 / ⌊0.87T⌋ = 8 core, 1 / 2 filler
                core = (9, 8)[k]
                expected = {(k, train_locs[0], breed): core, (k, filler, breed): 10 - core}
            else:  # M2M: folder 0, the k-th training location
                expected = {(0, train_locs[k], breed): 10}
            assert got == expected
        got = Counter(_folder(p) for p, yi in zip(test.paths, test.y) if yi == label)
        folders = [(0, test_locs[0]), (1, test_locs[0])] if filler else [(0, loc) for loc in test_locs]
        assert got == {(f, loc, breed): 10 for f, loc in folders}
    for split in ds.splits.values():  # labels agree with the folders the images come from
        where = [_folder(p) for p in split.paths]
        assert split.y.tolist() == [BREEDS.index(b) for _, _, b in where]
        assert split.s.tolist() == [LOCATIONS.index(loc) for _, loc, _ in where]
        assert torch.equal(split.g, 6 * split.y + split.s)
    assert (test.e == 2).all() and ds.num_envs == 2 and ds.num_groups == 24


@pytest.mark.parametrize("challenge", sorted(SPEC_TABLE))
def test_spawrious_release_sizes(challenge):
    """T = 3168: 12,672 per SC group and 25,344 test images; O2O core 3,072 / 2,756."""
    envs = environments(challenge, 3168)
    assert [sum(t.count for t in env) for env in envs] == [12672, 12672, 25344]
    if challenge.startswith("o2o"):
        assert sorted({t.count for t in envs[0]}) == [96, 3072]
        assert sorted({t.count for t in envs[1]}) == [412, 2756]
    else:
        assert {t.folder for env in envs for t in env} == {0}


def test_spawrious_takes_the_first_sorted_file_names(sp_dir):
    ds = load_dataset("spawrious", {**SP, "challenge": "o2o_easy"}, 0, sp_dir)
    paths = _pooled(ds.splits["train"], ds.splits["val"])[0] + list(ds.splits["test"].paths)
    chosen: dict[tuple, list[str]] = {}
    for p in paths:
        chosen.setdefault(_folder(p), []).append(Path(p).name)
    for (folder, location, breed), names in chosen.items():
        on_disk = sorted(n for n in (sp_dir / "spawrious224" / str(folder) / location / breed).iterdir()
                         if n.suffix in (".png", ".jpg"))
        assert sorted(names) == [n.name for n in on_disk[:len(names)]]
    assert chosen[(0, "desert", "bulldog")] and not any(p.endswith(".txt") for p in paths)


def test_spawrious_is_deterministic_per_data_seed(sp_dir):
    def splits(seed):
        ds = load_dataset("spawrious", {**SP, "challenge": "m2m_medium"}, seed, sp_dir)
        return {name: (list(sp.paths), sp.y.tolist(), sp.e.tolist()) for name, sp in ds.splits.items()}

    first, again, other = splits(0), splits(0), splits(5)
    assert first == again
    assert first["train"][0] != other["train"][0] and first["test"] == other["test"]


def _seed_hash(*args) -> int:
    """DomainBed's ``misc.seed_hash``, written out again."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2 ** 31)


def _domainbed_split(n: int, n_out: int, seed: int) -> tuple[list[int], list[int]]:
    """DomainBed's ``misc.split_dataset``: a RandomState shuffle of a key list, (first n, rest)."""
    keys = list(range(n))
    np.random.RandomState(seed).shuffle(keys)
    return keys[:n_out], keys[n_out:]


def _domainbed_env(sp_dir: Path, challenge: str, k: int, t: int = 10) -> list[str]:
    """SC_group_{k+1} in DomainBed's concatenation order (breeds in the table's order, the filler
    after the core locations), from the METHODS §D.5 table and the sorted folder listings."""
    routes, filler = SPEC_TABLE[challenge]
    order = ("bulldog", "dachshund", "labrador", "corgi")
    if filler is None:  # M2M: folder 0, the k-th training location
        takes = [(0, routes[b][0][k], b, t) for b in order]
    else:
        core = int((0.97, 0.87)[k] * t)
        takes = [(k, routes[b][0][0], b, core) for b in order] + [(k, filler, b, t - core) for b in order]
    paths = []
    for folder, loc, breed, count in takes:
        d = sp_dir / "spawrious224" / str(folder) / loc / breed
        paths += [str(d / n) for n in sorted(os.listdir(d)) if n.endswith((".png", ".jpg"))][:count]
    return paths


@pytest.mark.parametrize("challenge,seed", [("o2o_medium", 0), ("m2m_easy", 42), ("o2o_hard", 777)])
def test_spawrious_holdout_is_domainbeds_split_seed_for_seed(sp_dir, challenge, seed):
    """DomainBed's train.py: ``out, in_ = split_dataset(env, int(len(env)·0.2),
    seed_hash(trial_seed, env_i))`` with env_i = 1, 2 for SC_group_1, SC_group_2 (Test is 0)."""
    ds = load_dataset("spawrious", {**SP, "challenge": challenge}, seed, sp_dir)
    train, val = ds.splits["train"], ds.splits["val"]
    for k in (0, 1):
        env = _domainbed_env(sp_dir, challenge, k)
        out, in_ = _domainbed_split(len(env), int(len(env) * 0.2), _seed_hash(seed, k + 1))
        assert [p for p, e in zip(val.paths, val.e) if e == k] == [env[i] for i in out]
        assert [p for p, e in zip(train.paths, train.e) if e == k] == [env[i] for i in in_]


def test_spawrious_augments_training_by_default_and_never_evaluation(sp_dir):
    """DomainBed (``data_augmentation`` True) and the official package (``augment=True``)."""
    idx = torch.arange(8)

    def augmented(split) -> bool:
        return not torch.equal(next(split.batches([idx])).x, split.fetch(idx).x)

    ds = load_dataset("spawrious", SP, 0, sp_dir)
    assert augmented(ds.splits["train"])
    assert not augmented(ds.splits["val"]) and not augmented(ds.splits["test"])
    off = load_dataset("spawrious", {**SP, "augment": False}, 0, sp_dir)
    assert not augmented(off.splits["train"])


def test_spawrious_errors(tmp_path, sp_dir):
    with pytest.raises(UserError, match="domainbed-sc download spawrious"):
        load_dataset("spawrious", SP, 0, tmp_path)
    with pytest.raises(UserError, match="holds 10 images, 11 needed"):
        load_dataset("spawrious", {**SP, "per_folder": 11}, 0, sp_dir)
    with pytest.raises(UserError, match="dataset argument challenge: .o2o_extreme. .expected one of"):
        load_dataset("spawrious", {**SP, "challenge": "o2o_extreme"}, 0, sp_dir)


# -- the disk pipeline -----------------------------------------------------------------------
def test_eval_pixels_are_resize_center_crop_and_imagenet_normalisation(wb_dir):
    split = load_dataset("waterbirds", WB, 0, wb_dir).splits["test"]
    with Image.open(split.paths[3]) as im:
        img = im.convert("RGB")
    reference = T.Compose([T.Resize((37, 37)), T.CenterCrop(32), T.ToTensor(),  # 32·256/224 ≈ 37
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(img)
    x = split.fetch(torch.tensor([3])).x
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x[0], reference) and x.min() < 0  # normalised, not [0, 1]


@pytest.mark.parametrize("augment", [False, True])
def test_streams_are_ordered_and_independent_of_the_worker_count(sp_dir, augment):
    index_batches = [torch.tensor([5, 3, 60, 3]), torch.tensor([10, 0, 63])]
    xs = []
    for workers in (0, 2):
        split = load_dataset("spawrious", {**SP, "num_workers": workers, "augment": augment},
                             0, sp_dir).splits["train"]
        batches = list(split.batches(iter(index_batches)))
        for b, idx in zip(batches, index_batches):
            assert torch.equal(b.idx, idx) and torch.equal(b.y, split.y[idx])
            assert torch.equal(b.s, split.s[idx]) and torch.equal(b.e, split.e[idx])
        xs.append(torch.cat([b.x for b in batches]))
    assert torch.equal(xs[0], xs[1])
    # the repeated example 3: same pixels without augmentation, its own draw with it
    assert torch.equal(xs[0][1], xs[0][3]) != augment


def test_augmentation_is_seeded_by_the_batch_and_spares_the_global_rng(sp_dir):
    ds = load_dataset("spawrious", {**SP, "augment": True}, 0, sp_dir)
    train, val = ds.splits["train"], ds.splits["val"]
    idx = torch.arange(16)
    rng = torch.get_rng_state()
    first, again = (next(train.batches([idx])).x for _ in range(2))
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(first, again)
    assert not torch.equal(first, next(train.batches([idx.flip(0)])).x.flip(0))
    assert not torch.equal(first, next(train.eval_batches(16)).x)  # evaluation never augments
    assert torch.equal(next(val.batches([idx[:4]])).x, val.fetch(idx[:4]).x)


def test_eval_batches_are_capped(sp_dir, monkeypatch):
    monkeypatch.setattr(images, "EVAL_BATCH_CAP", 16)
    split = load_dataset("spawrious", SP, 0, sp_dir).splits["test"]
    batches = list(split.eval_batches(2048))
    assert [len(b) for b in batches] == [16] * 5
    assert torch.equal(torch.cat([b.idx for b in batches]), torch.arange(80))


def test_eval_batches_of_given_indices_are_those_examples_unaugmented(sp_dir, monkeypatch):
    """A disk split's training subsample (training/evaluation.py) goes through the eval stream."""
    monkeypatch.setattr(images, "EVAL_BATCH_CAP", 4)
    train = load_dataset("spawrious", {**SP, "augment": True}, 0, sp_dir).splits["train"]
    some = torch.tensor([1, 4, 5, 9, 12, 30])
    batches = list(train.eval_batches(2048, some))
    assert [len(b) for b in batches] == [4, 2]
    assert torch.equal(torch.cat([b.idx for b in batches]), some)
    assert torch.equal(torch.cat([b.x for b in batches]), train.fetch(some).x)


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.setenv(images.WORKERS_ENV, "3")
    assert images.resolve_workers(None) == 3 and images.resolve_workers(1) == 1
    monkeypatch.setenv(images.WORKERS_ENV, "many")
    with pytest.raises(UserError, match="DOMAINBED_SC_WORKERS"):
        images.resolve_workers(None)


@pytest.mark.parametrize("dataset,algorithm,extra", [
    ("waterbirds", "ERM", {"augment": True}), ("waterbirds", "GroupDRO", {}),
    ("waterbirds", "ERM", {"variant": "ex2l_envs"}),
    ("spawrious", "ERM", {"challenge": "m2m_hard"}), ("spawrious", "GroupDRO", {"augment": True})])
def test_end_to_end_runs(dataset, algorithm, extra, wb_dir, sp_dir, tmp_path, capsys):
    data_dir, base = (wb_dir, WB) if dataset == "waterbirds" else (sp_dir, SP)
    args = RunArgs(dataset=dataset, algorithm=algorithm,
                   dataset_args={**base, **extra, "num_workers": 2},
                   hparams={"arch": "resnet18", "batch_size": 8}, steps=3)
    out = train(args, RunOptions(tmp_path / "run", data_dir, "cpu", progress=False))
    records = list(read_records(out / RESULTS))
    ds = load_dataset(dataset, args.dataset_args, 0, data_dir)
    assert (out / DONE).exists() and records[-1]["step"] == 3
    assert records[-1]["dataset"]["input_shape"] == [3, 32, 32]
    for name, split in ds.splits.items():
        m = records[-1]["metrics"][name]
        # every example has a group, and the group accuracies are the ones WGA takes the min of
        assert m["n"] == sum(m["group_n"].values()) == len(split)
        assert m["wga"] == min(m["group_acc"].values())
    assert all(v == v for v in records[-1]["losses"].values())  # finite, not NaN
    if dataset == "waterbirds":  # tables name the split of each column; Waterbirds has no ID split
        assert cli.main(["collect", str(tmp_path), "--selection", "last"]) == 0
        table = capsys.readouterr().out
        assert "| ID acc" not in table and "OOD acc (AA) = AA on test; WGA = WGA on test;" in table


def test_augmented_runs_do_not_depend_on_the_worker_count(sp_dir, tmp_path):
    def run(workers):
        args = RunArgs(dataset="spawrious", dataset_args={**SP, "augment": True, "num_workers": workers},
                       hparams={"arch": "resnet18", "batch_size": 8}, steps=3)
        out = train(args, RunOptions(tmp_path / f"w{workers}", sp_dir, "cpu", progress=False))
        rec = list(read_records(out / RESULTS))[-1]
        return rec["losses"], {k: m["acc"] for k, m in rec["metrics"].items()}

    assert run(0) == run(2)


# -- downloads -------------------------------------------------------------------------------
BLOB = bytes(range(256)) * 600
SHA = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def test_fetch_downloads_and_verifies(tmp_path):
    with serve({"/f.bin": BLOB}) as srv:
        path = download.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", SHA, 5, progress=False)
    assert path.read_bytes() == BLOB and not (tmp_path / "f.bin.part").exists()


def test_fetch_resumes_a_partial_file_with_a_range_request(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(BLOB[:40000])
    with serve({"/f.bin": BLOB}) as srv:
        download.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", SHA, 5, progress=False)
    assert srv.requests == [("/f.bin", "bytes=40000-")]
    assert (tmp_path / "f.bin").read_bytes() == BLOB


def test_an_interrupted_transfer_resumes_on_the_next_call(tmp_path):
    url_path, dest = "/f.bin", tmp_path / "f.bin"
    with serve({url_path: BLOB}, cut=50000) as srv:
        with pytest.raises(UserError, match="run the command again to resume"):
            download.fetch(srv.url + url_path, dest, SHA, 5, progress=False)
    assert (tmp_path / "f.bin.part").stat().st_size == 50000
    with serve({url_path: BLOB}) as srv:
        download.fetch(srv.url + url_path, dest, SHA, 5, progress=False)
    assert srv.requests == [(url_path, "bytes=50000-")] and dest.read_bytes() == BLOB


def test_fetch_starts_over_where_the_server_ignores_range(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"x" * 1000)
    with serve({"/f.bin": BLOB}, ranges=False) as srv:
        download.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", SHA, 5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == BLOB


def test_a_complete_partial_file_is_kept(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(BLOB)
    with serve({"/f.bin": BLOB}) as srv:  # answers 416: nothing past the end
        download.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", SHA, 5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == BLOB


def test_a_bad_checksum_deletes_the_file(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 100)  # a corrupt start, then resumed
    with serve({"/f.bin": BLOB}) as srv:
        with pytest.raises(UserError, match="does not match the published"):
            download.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", SHA, 5, progress=False)
        assert not list(tmp_path.iterdir())
        download.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", SHA, 5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == BLOB


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_servers_fail_fast_in_one_line(tmp_path):
    start = time.monotonic()
    with pytest.raises(UserError, match="unreachable") as refused:
        download.fetch(f"http://127.0.0.1:{_closed_port()}/x", tmp_path / "x", timeout=1, progress=False)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(UserError, match="unreachable.*timeout 0.5s") as timed_out:
            download.fetch(f"http://127.0.0.1:{silent.getsockname()[1]}/x", tmp_path / "x",
                           timeout=0.5, progress=False)
    assert time.monotonic() - start < 5
    assert "\n" not in str(refused.value) + str(timed_out.value)


def test_cli_download_exits_2_with_one_line(tmp_path, capsys):
    mirror = f"http://127.0.0.1:{_closed_port()}"
    assert cli.main(["download", "spawrious_o2o_easy", "--data-dir", str(tmp_path), "--timeout",
                     "1", "--mirror", mirror, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("domainbed-sc: error: cannot download") and err.count("\n") == 1
    assert "copy spawrious224/" in err and str(tmp_path) in err


def test_download_waterbirds_from_a_mirror_in_either_archive_layout(wb_dir, tmp_path):
    src = wb_dir / "waterbirds_v1.0"
    flat = tar_gz({p.name: p for p in src.iterdir()})  # the WILDS bundle: files at the top
    nested = tar_gz({"waterbird_complete95_forest2water2": src})  # GroupDRO's tarball
    # the mirror serves one archive: the other file name answers 404 and the next one is used
    for path, blob, name in (("/waterbirds_v1.0.tar.gz", flat, "flat"),
                             ("/waterbird_complete95_forest2water2.tar.gz", nested, "nested")):
        data_dir = tmp_path / name
        with serve({path: blob}) as srv:
            files.ensure(files.resolve(["waterbirds"]), data_dir,
                         files.How(timeout=5, progress=False, mirror=srv.url))
        ds = load_dataset("waterbirds", WB, 0, data_dir)
        assert {k: len(v) for k, v in ds.splits.items()} == {"train": 18, "val": 12, "test": 12}
        assert sorted(p.name for p in data_dir.iterdir()) == ["waterbirds_v1.0"]  # archive removed


def test_download_spawrious_extracts_the_release_folder(sp_dir, tmp_path):
    blob = tar_gz({"spawrious224": sp_dir / "spawrious224"})
    with serve({"/spawrious224__o2o_easy.tar.gz": blob}) as srv:
        how = files.How(timeout=5, progress=False, mirror=srv.url)
        files.ensure(files.resolve(["spawrious_o2o_easy"]), tmp_path, how)
        files.ensure(files.resolve(["spawrious_o2o_easy"]), tmp_path, how)
    assert len(srv.requests) == 1  # the second call found it complete
    assert (tmp_path / "spawrious224" / ".complete-spawrious_o2o_easy").exists()
    ds = load_dataset("spawrious", SP, 0, tmp_path)
    assert len(ds.splits["test"]) == 80 and not (tmp_path / "spawrious224__o2o_easy.tar.gz").exists()


def test_extract_refuses_unsafe_and_corrupt_archives(tmp_path):
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz({"../../escaped.txt": evil}))
    with pytest.raises(UserError, match="unsafe member"):
        download.extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path.parent / "escaped.txt").exists()
    archive.write_bytes(b"<html>not a tarball</html>")
    with pytest.raises(UserError, match="not a valid archive"):
        download.extract(archive, tmp_path / "out", progress=False)
    assert not archive.exists()


# -- real data, where present ----------------------------------------------------------------
def _real(folder: str) -> Path:
    data_dir = resolve_data_dir(None)
    if not (data_dir / folder).is_dir():
        pytest.skip(f"real {folder} not found under {data_dir} (domainbed-sc download)")
    return data_dir


@pytest.mark.real_data
def test_real_waterbirds_counts():
    ds = load_dataset("waterbirds", {"num_workers": 0}, 0, _real("waterbirds_v1.0"))
    assert {name: _group_counts(sp, 4) for name, sp in ds.splits.items()} == REAL_SPLITS
    x = ds.splits["test"].fetch(torch.tensor([0])).x
    assert x.shape == (1, 3, 224, 224)


@pytest.mark.real_data
def test_real_spawrious_sizes():
    data_dir = _real("spawrious224")
    for challenge in ("o2o_easy", "m2m_hard"):
        ds = load_dataset("spawrious", {"challenge": challenge, "num_workers": 0}, 0, data_dir)
        assert len(ds.splits["train"]) + len(ds.splits["val"]) == 2 * 12672
        assert len(ds.splits["test"]) == 25344
