"""CelebA (docs/METHODS.md §D.8) on generated fixtures in the release layout; its download against a
local HTTP server (tests never contact the internet).  The real-data check at the end runs where
``$DOMAINBED_SC_DATA`` holds the real ``celeba/`` folder and says so when it skips.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from fixtures_images import CELEBA_COUNTS, CELEBA_EXTRA, CELEBA_REAL_SPLITS, make_celeba, serve
from PIL import Image
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from domainbed_sc import download
from domainbed_sc.download import Archive
from domainbed_sc.datasets import DATASETS, load_dataset
from domainbed_sc.datasets.celeba import (ATTRIBUTES, EX2L_PROPORTIONS, FILES, RELEASE, CelebA,
                                          against_correlation)
from domainbed_sc.datasets.files import How, ensure
from domainbed_sc.datasets.sources import resolve_data_dir
from domainbed_sc.datasets.waterbirds import ex2l_group_counts
from domainbed_sc.errors import UserError
from domainbed_sc.training.records import RESULTS, RunArgs, read_records
from domainbed_sc.training.trainer import RunOptions, train

CA = {"image_size": 16, "num_workers": 0}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BLUE = torch.tensor([(c - m) / s for c, m, s in zip((0.0, 0.0, 1.0), MEAN, STD)])


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory) -> Path:
    return make_celeba(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="module")
def ca_scaled(tmp_path_factory) -> Path:
    """The real per-split group counts divided by 20, empty image files: the eX2L proportions at
    a size where every group of both environments is populated."""
    counts = {(code, g // 2, g % 2): n // 20
              for code, split in enumerate(CELEBA_REAL_SPLITS)
              for g, n in enumerate(CELEBA_REAL_SPLITS[split])}
    return make_celeba(tmp_path_factory.mktemp("celeba_scaled"), counts, images=False)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


def release(data_dir: Path) -> pd.DataFrame:
    """The fixture's files read independently of the loader: one row per image, 0/1 attributes
    and the partition code."""
    root = data_dir / "celeba"
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    rows = [line.split() for line in lines[2:]]
    table = pd.DataFrame([[int(v) > 0 for v in r[1:]] for r in rows], columns=names,
                         index=[r[0] for r in rows]).astype(int)
    parts = dict(line.split() for line in (root / "list_eval_partition.txt").read_text().splitlines())
    table["partition"] = [int(parts[n]) for n in table.index]
    table["path"] = [str(root / "img_align_celeba" / n) for n in table.index]
    return table


def counts(split) -> list[int]:
    return torch.bincount(split.g, minlength=4).tolist()


# -- official partition, attributes by name -------------------------------------------------
@pytest.mark.parametrize("target,spurious", [("Blond_Hair", "Male"), ("Attractive", "Smiling")])
def test_official_splits_and_groups_follow_the_release_files(ca_dir, target, spurious):
    ds = load_dataset("celeba", {**CA, "target": target, "spurious": spurious}, 0, ca_dir)
    table = release(ca_dir)
    assert set(ds.splits) == {"train", "val", "test"} and ds.provides == {"s", "g"}
    assert (ds.val_split, ds.id_split, ds.ood_split) == ("val", "val", "test")
    assert ds.num_groups == 4 and ds.input_shape == (3, 16, 16) and not ds.small_images
    for code, name in enumerate(("train", "val", "test")):
        split, rows = ds.splits[name], table[table["partition"] == code]
        assert list(split.paths) == list(rows["path"])
        assert split.y.tolist() == rows[target].tolist()
        assert split.s.tolist() == rows[spurious].tolist()
        assert torch.equal(split.g, 2 * split.y + split.s) and (split.e == -1).all()
    if target == "Blond_Hair":
        assert {name: counts(sp) for name, sp in ds.splits.items()} == {
            name: [CELEBA_COUNTS[(code, g // 2, g % 2)] for g in range(4)]
            for code, name in enumerate(("train", "val", "test"))}


def test_torchvision_reads_the_same_release(ca_dir, monkeypatch):
    """The layout is torchvision's: its CelebA (checksums off for the fixture) gives the same
    files and attributes split by split."""
    monkeypatch.setattr(tv_datasets.CelebA, "file_list",
                        [(i, None, n) for i, _, n in tv_datasets.CelebA.file_list])
    ds = load_dataset("celeba", CA, 0, ca_dir)
    blond, male = ATTRIBUTES.index("Blond_Hair"), ATTRIBUTES.index("Male")
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        tv = tv_datasets.CelebA(str(ca_dir), split=theirs, target_type="attr")
        assert tv.attr_names[:len(ATTRIBUTES)] == list(ATTRIBUTES)
        assert [Path(p).name for p in ds.splits[ours].paths] == list(tv.filename)
        assert torch.equal(ds.splits[ours].y, tv.attr[:, blond])
        assert torch.equal(ds.splits[ours].s, tv.attr[:, male])


def test_file_list_is_torchvisions():
    """Google Drive ids and MD5s as torchvision publishes them, for every file the loader reads."""
    published = {name: (file_id, md5) for file_id, md5, name in tv_datasets.CelebA.file_list}
    assert {name: (i, m) for i, m, name in RELEASE} == {
        n: published[n] for n in ("img_align_celeba.zip", "list_attr_celeba.txt",
                                  "list_eval_partition.txt")}


def test_eval_pixels_are_the_central_square_resized_and_normalised(ca_dir):
    split = load_dataset("celeba", CA, 0, ca_dir).splits["test"]
    with Image.open(split.paths[2]) as im:
        img = im.convert("RGB")
    assert img.size == (18, 22)  # the release's 178 × 218 aspect
    reference = T.Compose([T.CenterCrop(18), T.Resize((16, 16)), T.ToTensor(),
                           T.Normalize(MEAN, STD)])(img)
    assert torch.allclose(split.fetch(torch.tensor([2])).x[0], reference)


def test_bad_arguments_fail_in_one_line(ca_dir, tmp_path):
    with pytest.raises(UserError, match="target: 'Blonde_Hair' .expected a CelebA attribute name, "
                                        "e.g. Blond_Hair, Male") as exc:
        DATASETS.get("celeba").parse_args({"target": "Blonde_Hair"})
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="target and spurious are both Male"):
        load_dataset("celeba", {"target": "Male"}, 0, ca_dir)
    with pytest.raises(UserError, match="patch works with variant official only"):
        load_dataset("celeba", {"patch": True, "variant": "chroma_harder"}, 0, ca_dir)
    with pytest.raises(UserError, match="Blond_Hair x Male only"):
        load_dataset("celeba", {"variant": "ex2l_envs", "spurious": "Young"}, 0, ca_dir)
    with pytest.raises(UserError, match="list_attr_celeba.txt not found .*domainbed-sc download celeba"):
        load_dataset("celeba", CA, 0, tmp_path)


def test_missing_images_are_named(tmp_path):
    data_dir = make_celeba(tmp_path, images=False)
    (data_dir / "celeba" / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.raises(UserError, match="1 of 50 CelebA images .e.g. 000005.jpg. not found"):
        load_dataset("celeba", CA, 0, data_dir)


# -- Chroma-VAE's harder setting ------------------------------------------------------------
@pytest.mark.parametrize("target,spurious,kept", [("Blond_Hair", "Male", {1, 2}),
                                                  ("Attractive", "Smiling", {0, 3})])
def test_harder_training_split_has_no_minority_example(ca_dir, target, spurious, kept):
    """Blond_Hair × Male: blond women and dark-haired men stay (the real correlation); the
    fixture's Smiling follows Attractive, so there the agreeing pairs stay."""
    args = {**CA, "target": target, "spurious": spurious}
    official = load_dataset("celeba", args, 0, ca_dir)
    harder = load_dataset("celeba", {**args, "variant": "chroma_harder"}, 0, ca_dir)
    train, full = harder.splits["train"], official.splits["train"]
    assert set(train.g.tolist()) == kept
    assert torch.equal(train.s, train.y if kept == {0, 3} else 1 - train.y)  # s determines y
    assert list(train.paths) == [p for p, g in zip(full.paths, full.g.tolist()) if g in kept]
    for name in ("val", "test"):  # evaluation keeps all four groups, unfiltered
        assert list(harder.splits[name].paths) == list(official.splits[name].paths)
        assert min(counts(harder.splits[name])) > 0
    assert harder.id_split is None  # val is no longer drawn like training


def test_minority_groups_at_the_real_counts_are_blond_men_and_dark_haired_women():
    g = torch.repeat_interleave(torch.arange(4), torch.tensor(CELEBA_REAL_SPLITS["train"]))
    assert against_correlation(g // 2, g % 2) == (0, 3)
    assert against_correlation(g // 2, 1 - g % 2) == (1, 2)  # the other sign of correlation


# -- the blue patch -------------------------------------------------------------------------
def test_blue_patch_is_a_10x10_top_left_square_on_the_shortcut_images(ca_dir):
    args = {**CA, "image_size": 24}
    plain = load_dataset("celeba", args, 0, ca_dir)
    patched = load_dataset("celeba", {**args, "patch": True}, 0, ca_dir)
    assert patched.id_split is None
    train = patched.splits["train"]
    assert torch.equal(train.s, train.y)  # on exactly the y = 1 training images
    for name in ("val", "test"):  # a half of each class elsewhere: s independent of y
        sp = patched.splits[name]
        for c in (0, 1):
            assert int(sp.s[sp.y == c].sum()) == int((sp.y == c).sum()) // 2
        assert torch.equal(sp.y, plain.splits[name].y)
    for name, sp in patched.splits.items():
        idx = torch.arange(len(sp))
        for x in (sp.fetch(idx).x, next(sp.batches([idx])).x):  # fetch and the training stream
            ref = plain.splits[name].fetch(idx).x
            on = sp.s == 1
            corner = x[:, :, :10, :10]
            assert torch.allclose(corner[on], BLUE[:, None, None].expand(3, 10, 10).expand_as(corner[on]))
            assert torch.equal(corner[~on], ref[~on][:, :, :10, :10])
            rest = torch.ones(24, 24, dtype=torch.bool)
            rest[:10, :10] = False
            assert torch.equal(x[:, :, rest], ref[:, :, rest])  # nothing else changes


def test_patched_training_runs_end_to_end(ca_dir, tmp_path):
    args = RunArgs(dataset="celeba", dataset_args={**CA, "patch": True},
                   hparams={"arch": "mlp", "batch_size": 8}, steps=2)
    out = train(args, RunOptions(tmp_path / "run", ca_dir, "cpu", progress=False))
    rec = list(read_records(out / RESULTS))[-1]
    assert set(rec["metrics"]) >= {"val", "test"}


# -- eX2L's two environments ----------------------------------------------------------------
def test_ex2l_environments_have_app_b6_proportions_and_never_touch_test(ca_scaled):
    ds = load_dataset("celeba", {**CA, "variant": "ex2l_envs"}, 0, ca_scaled)
    table = release(ca_scaled)
    assert ds.provides == {"s", "g", "e"} and ds.num_envs == 2 and ds.id_split is None
    train, val, test = (ds.splits[k] for k in ("train", "val", "test"))
    assert list(test.paths) == list(table.loc[table["partition"] == 2, "path"])
    assert not set(train.paths) & set(val.paths)
    assert not (set(train.paths) | set(val.paths)) & set(test.paths)
    pool = [sum(CELEBA_REAL_SPLITS[s][g] // 20 for s in ("train", "val")) for g in range(4)]
    expected = ex2l_group_counts(pool, EX2L_PROPORTIONS)
    for env, shares in enumerate(EX2L_PROPORTIONS):
        g = torch.cat([train.g[train.e == env], val.g[val.e == env]])
        assert torch.bincount(g, minlength=4).tolist() == expected[env]
        n = len(g)
        assert all(abs(c / n - p) < 0.002 for c, p in zip(expected[env], shares))
        assert int((val.e == env).sum()) == int(n * 0.2)  # DomainBed's 20 % holdout


def test_ex2l_sizes_at_the_real_counts():
    """METHODS §D.8: about 90k images per environment, blond men (1,387 + 182) bind."""
    pool = [a + b for a, b in zip(CELEBA_REAL_SPLITS["train"], CELEBA_REAL_SPLITS["val"])]
    envs = ex2l_group_counts(pool, EX2L_PROPORTIONS)
    assert [sum(e) for e in envs] == [90218, 90226]  # App. B.6's shares of env 1 add to 99.99 %
    assert envs[0][3] + envs[1][3] == pool[3]  # every blond man is used
    over = ex2l_group_counts([p + (1000 if g != 3 else 0) for g, p in enumerate(pool)],
                             EX2L_PROPORTIONS)
    assert over == envs  # more of every other group changes nothing: group 3 binds


# -- download -------------------------------------------------------------------------------
def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def test_download_fetches_checks_and_unzips_the_release(ca_dir, tmp_path):
    root = ca_dir / "celeba"
    blobs = {"img_align_celeba.zip": _zip({f"img_align_celeba/{p.name}": p.read_bytes()
                                            for p in (root / "img_align_celeba").iterdir()})}
    blobs |= {n: (root / n).read_bytes() for n in ("list_attr_celeba.txt", "list_eval_partition.txt")}
    # the fixture's checksums in place of the published ones; the mirror serves the data-dir paths
    release = dataclasses.replace(FILES, parts=tuple(
        Archive("unused", n, "md5:" + hashlib.md5(b).hexdigest()) for n, b in blobs.items()))
    with serve({f"/celeba/{n}": b for n, b in blobs.items()}) as srv:
        for _ in range(2):
            ensure([release], tmp_path, How(timeout=5, progress=False, mirror=srv.url))
    assert len(srv.requests) == 3  # the second call found it complete
    assert not (tmp_path / "celeba" / "img_align_celeba.zip").exists()  # unpacked, then deleted
    ours = load_dataset("celeba", CA, 0, tmp_path)
    theirs = load_dataset("celeba", CA, 0, ca_dir)
    assert torch.equal(ours.splits["train"].fetch(torch.arange(4)).x,
                       theirs.splits["train"].fetch(torch.arange(4)).x)


def test_download_refuses_a_wrong_checksum_and_an_unsafe_zip(tmp_path, monkeypatch):
    bad = dataclasses.replace(FILES, parts=(Archive("unused", "list_attr_celeba.txt", "md5:" + "0" * 32),))
    with serve({"/celeba/list_attr_celeba.txt": b"<html>quota exceeded</html>"}) as srv:
        with pytest.raises(UserError, match="does not match the published"):
            bad.fetch(tmp_path, How(timeout=5, progress=False, mirror=srv.url))
    assert not (tmp_path / "celeba" / "list_attr_celeba.txt").exists()
    evil = tmp_path / "evil.zip"
    evil.write_bytes(_zip({"../escaped.txt": b"x"}))
    with pytest.raises(UserError, match="unsafe member"):
        download.extract_zip(evil, tmp_path / "out", progress=False)
    assert not (tmp_path / "escaped.txt").exists()


def test_the_fixture_writes_every_file_torchvision_lists(ca_dir):
    listed = {n for _, _, n in tv_datasets.CelebA.file_list if not n.endswith(".zip")}
    assert listed == {"list_attr_celeba.txt", "list_eval_partition.txt", *CELEBA_EXTRA}
    assert all((ca_dir / "celeba" / n).is_file() for n in listed)


# -- real data, where present ----------------------------------------------------------------
@pytest.mark.real_data
def test_real_celeba_counts():
    data_dir = resolve_data_dir(None)
    if not (data_dir / "celeba" / "list_attr_celeba.txt").is_file():
        pytest.skip(f"real CelebA not found under {data_dir} (domainbed-sc download celeba)")
    ds = load_dataset("celeba", {"num_workers": 0}, 0, data_dir)
    assert {name: counts(sp) for name, sp in ds.splits.items()} == CELEBA_REAL_SPLITS
    assert ds.splits["test"].fetch(torch.tensor([0])).x.shape == (1, 3, 224, 224)
