"""Waterbirds and Spawrious on tiny fixtures in their real layouts; the disk image pipeline; the
resumable downloader against a local HTTP server (tests never contact the internet).

Real-data checks at the end run where ``$DOMAINBED_SC_DATA`` holds the real Waterbirds /
Spawrious folders and say so when they skip.
"""
from __future__ import annotations

import hashlib
import socket
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from domainbed_sc import cli, download
from domainbed_sc.datasets import images, load_dataset
from domainbed_sc.datasets.sources import resolve_data_dir
from domainbed_sc.datasets.spawrious import BREEDS, LOCATIONS, environments
from domainbed_sc.errors import UserError
from domainbed_sc.training.records import DONE, RESULTS, RunArgs, read_records
from domainbed_sc.training.trainer import RunOptions, train
from fixtures_images import (WATERBIRDS_COUNTS, WATERBIRDS_REAL_GROUPS, make_spawrious,
                             make_waterbirds, serve, tar_gz)

WB = {"image_size": 32, "num_workers": 0}
SP = {"image_size": 32, "num_workers": 0, "per_folder": 10}
# SPEC §2.5, written out again per breed: (train locations, test locations), filler
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
# SPEC §2.4: per-split group counts (g0/g1/g2/g3) of the real data, and the eX2L environments
REAL_SPLITS = {"train": [3498, 184, 56, 1057], "val": [467, 466, 133, 133],
               "test": [2255, 2255, 642, 642]}
EX2L_ENVS = {0: [3421, 1017, 457, 641], 1: [2799, 1888, 374, 1191]}


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
    assert (ds.val_split, ds.id_split, ds.ood_split) == ("val", "val", "test")
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
    assert ds.train_group_counts().tolist() == [3498, 184, 56, 1057]  # acc_adj weights (§1.1)


def test_ex2l_envs_are_the_reconstructed_environments(wb_full_meta):
    ds = load_dataset("waterbirds", {**WB, "variant": "ex2l_envs"}, 0, wb_full_meta)
    train, val = ds.splits["train"], ds.splits["val"]
    assert set(ds.splits) == {"train", "val"} and ds.provides == {"s", "g", "e"}
    assert (ds.val_split, ds.id_split, ds.ood_split) == ("val", "val", "val") and ds.num_envs == 2
    paths, y, s, e = _pooled(train, val)
    assert len(set(paths)) == len(paths) == 11788
    g = 2 * y + s
    for k, expected in EX2L_ENVS.items():  # exactly round(p·n_g) per group (SPEC §2.4)
        assert torch.bincount(g[e == k], minlength=4).tolist() == expected
    # DomainBed holdout: int(0.2·n) of each environment held out (5,536 and 6,252 images)
    assert [int((val.e == k).sum()) for k in (0, 1)] == [1107, 1250]
    assert [int((train.e == k).sum()) for k in (0, 1)] == [5536 - 1107, 6252 - 1250]


def test_ex2l_envs_depend_on_the_data_seed_only(wb_full_meta):
    def assignment(seed):
        ds = load_dataset("waterbirds", {**WB, "variant": "ex2l_envs"}, seed, wb_full_meta)
        return dict(zip(_pooled(ds.splits["train"], ds.splits["val"])[0],
                        _pooled(ds.splits["train"], ds.splits["val"])[3].tolist()))

    first, again, other = assignment(0), assignment(0), assignment(1)
    assert first == again
    assert first != other and Counter(first.values()) == Counter(other.values())


def test_waterbirds_missing_data_says_how_to_get_it(tmp_path, wb_dir):
    with pytest.raises(UserError, match="domainbed-sc download waterbirds"):
        load_dataset("waterbirds", WB, 0, tmp_path)
    broken = make_waterbirds(tmp_path / "broken", images=False)
    victim = next((broken / "waterbirds_v1.0").glob("*/*.jpg"))
    victim.unlink()
    with pytest.raises(UserError, match=r"1 of \d+ Waterbirds images .* not found.*download waterbirds"):
        load_dataset("waterbirds", WB, 0, broken)
    with pytest.raises(UserError, match="unknown variant"):
        load_dataset("waterbirds", {"variant": "ex2l"}, 0, wb_dir)


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


def test_spawrious_errors(tmp_path, sp_dir):
    with pytest.raises(UserError, match="domainbed-sc download spawrious"):
        load_dataset("spawrious", SP, 0, tmp_path)
    with pytest.raises(UserError, match="holds 10 images, 11 needed"):
        load_dataset("spawrious", {**SP, "per_folder": 11}, 0, sp_dir)
    with pytest.raises(UserError, match="unknown challenge"):
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
    ("spawrious", "ERM", {"challenge": "m2m_hard"}), ("spawrious", "GroupDRO", {"augment": True})])
def test_end_to_end_runs(dataset, algorithm, extra, wb_dir, sp_dir, tmp_path):
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
        assert m["n"] == len(split) and 0 <= m["wga"] <= m["acc"] <= 1
    assert all(v == v for v in records[-1]["losses"].values())  # finite, not NaN


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


def test_cli_download_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/wb.tar.gz"
    monkeypatch.setattr(download, "WATERBIRDS", (download.Archive(url, "wb.tar.gz"),))
    assert cli.main(["download", "waterbirds", "--data-dir", str(tmp_path), "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("domainbed-sc: error: cannot download") and err.count("\n") == 1


def test_download_waterbirds_from_a_mirror_in_either_archive_layout(wb_dir, tmp_path, monkeypatch):
    src = wb_dir / "waterbirds_v1.0"
    flat = tar_gz({p.name: p for p in src.iterdir()})  # the WILDS bundle: files at the top
    nested = tar_gz({"waterbird_complete95_forest2water2": src})  # GroupDRO's tarball
    for blob, name in ((flat, "flat"), (nested, "nested")):
        data_dir = tmp_path / name
        with serve({"/wb.tar.gz": blob}) as srv:
            monkeypatch.setattr(download, "WATERBIRDS", (
                download.Archive(f"{srv.url}/gone", "first.tar.gz"),  # 404: the next mirror is used
                download.Archive(f"{srv.url}/wb.tar.gz", "second.tar.gz")))
            download.download(["waterbirds"], data_dir, timeout=5, progress=False)
        ds = load_dataset("waterbirds", WB, 0, data_dir)
        assert {k: len(v) for k, v in ds.splits.items()} == {"train": 18, "val": 12, "test": 12}
        assert sorted(p.name for p in data_dir.iterdir()) == ["waterbirds_v1.0"]  # archive removed


def test_download_spawrious_extracts_the_release_folder(sp_dir, tmp_path, monkeypatch):
    blob = tar_gz({"spawrious224": sp_dir / "spawrious224"})
    with serve({"/sp.tar.gz": blob}) as srv:
        monkeypatch.setitem(download.SPAWRIOUS, "spawrious_o2o_easy",
                            (download.Archive(f"{srv.url}/sp.tar.gz", "sp.tar.gz"),))
        download.download(["spawrious_o2o_easy"], tmp_path, timeout=5, progress=False)
        download.download(["spawrious_o2o_easy"], tmp_path, timeout=5, progress=False)
    assert len(srv.requests) == 1  # the second call found it complete
    assert (tmp_path / "spawrious224" / ".complete-spawrious_o2o_easy").exists()
    ds = load_dataset("spawrious", SP, 0, tmp_path)
    assert len(ds.splits["test"]) == 80 and not (tmp_path / "sp.tar.gz").exists()


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
