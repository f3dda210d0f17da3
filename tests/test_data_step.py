"""Setup's data step (``domainbed-sc download --for SWEEP``, datasets/files.py) and the file sets
datasets declare.  No test touches the network: archives come from a local HTTP mirror serving
tiny fake MNIST / CIFAR-10 files whose MD5s the tests register in torchvision's published lists
(the lists the step verifies against), or from a given local copy.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import socket
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import serve
from torchvision import datasets as tv

from domainbed_sc import cli
from domainbed_sc.datasets import DATASETS, files, sources
from domainbed_sc.datasets.toy import Toy

QUICKSTART = str(Path(__file__).parents[1] / "sweeps" / "quickstart.yaml")
N_TRAIN, N_TEST = 6, 4


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """No proxy for the local server, no mirror or local copy from the environment."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "*")
    for name in (files.SHARED_ENV, "DOMAINBED_SC_MIRROR"):
        monkeypatch.delenv(name, raising=False)


def _md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def _idx(magic: int, array: np.ndarray) -> bytes:
    """An IDX file (big-endian dimensions), gzipped as the MNIST archives are."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def fake_mnist(rng) -> dict[str, bytes]:
    """File name -> archive, in torchvision's resource order (train images, labels, test ...)."""
    out = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        out[f"{prefix}-images-idx3-ubyte.gz"] = _idx(2051, rng.integers(0, 256, (n, 28, 28)))
        out[f"{prefix}-labels-idx1-ubyte.gz"] = _idx(2049, rng.integers(0, 10, n))
    return out


def _member(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def fake_cifar(rng) -> tuple[bytes, dict[str, bytes], np.ndarray]:
    """(cifar-10-python.tar.gz, its members by name, all images HWC in train+test order)."""
    images = rng.integers(0, 256, (6 * 2, 32, 32, 3), dtype=np.uint8)
    members = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = images[2 * k:2 * k + 2]
        members[name] = pickle.dumps({"data": batch.transpose(0, 3, 1, 2).reshape(2, -1),
                                      "labels": [k, 9 - k]})
    members["batches.meta"] = pickle.dumps({"label_names": [str(c) for c in range(10)]})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            _member(tar, f"cifar-10-batches-py/{name}", blob)
    return buf.getvalue(), members, images


@pytest.fixture
def fakes(monkeypatch):
    """Fake MNIST and CIFAR-10 archives, their MD5s registered where torchvision publishes them.
    Returns {mirror path: bytes} and the CIFAR images."""
    rng = np.random.default_rng(0)
    mnist = fake_mnist(rng)
    archive, members, images = fake_cifar(rng)
    monkeypatch.setattr(tv.MNIST, "resources", [(n, _md5(b)) for n, b in mnist.items()])
    monkeypatch.setattr(tv.CIFAR10, "tgz_md5", _md5(archive))
    monkeypatch.setattr(tv.CIFAR10, "train_list",
                        [[f"data_batch_{i}", _md5(members[f"data_batch_{i}"])] for i in range(1, 6)])
    monkeypatch.setattr(tv.CIFAR10, "test_list", [["test_batch", _md5(members["test_batch"])]])
    monkeypatch.setattr(tv.CIFAR10, "meta", {**tv.CIFAR10.meta, "md5": _md5(members["batches.meta"])})
    served = {f"/MNIST/raw/{n}": b for n, b in mnist.items()}
    served["/cifar-10-python.tar.gz"] = archive
    return served, images


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(data_dir: Path, *extra: str) -> int:
    return cli.main(["download", "--for", QUICKSTART, "--data-dir", str(data_dir), "--quiet",
                     "--timeout", "2", *extra])


def _check_readable(data_dir: Path, images: np.ndarray) -> None:
    """The suite's own readers take what the step put there."""
    x, y = sources.mnist(data_dir, train=True)
    assert x.shape == (N_TRAIN, 28, 28) and len(y) == N_TRAIN
    cifar = sources.cifar10(data_dir)
    pooled = torch.cat([cifar["x_train"], cifar["x_test"]]).permute(0, 2, 3, 1)
    assert torch.equal(pooled, torch.from_numpy(images))


def test_the_step_downloads_what_the_quickstart_reads_from_a_mirror(fakes, tmp_path, monkeypatch):
    served, images = fakes
    with serve(served) as srv:
        monkeypatch.setenv("DOMAINBED_SC_MIRROR", srv.url)
        assert step(tmp_path) == 0
        assert step(tmp_path) == 0  # a second call only checks
    assert sorted(p for p, _ in srv.requests) == sorted(served)  # MNIST and CIFAR-10, once each
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()  # extracted, then deleted
    for name, blob in served.items():
        if name.startswith("/MNIST"):
            assert (tmp_path / name[1:]).read_bytes() == blob
    _check_readable(tmp_path, images)


def test_a_wrong_checksum_fails_in_one_line_and_keeps_nothing(tmp_path, capsys):
    served = {f"/MNIST/raw/{n}": b for n, b in fake_mnist(np.random.default_rng(0)).items()}
    with serve(served) as srv:  # torchvision's real MD5s: the fakes cannot match them
        assert step(tmp_path, "--mirror", srv.url) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the published" in err
    assert not list((tmp_path / "MNIST" / "raw").iterdir())


def test_a_local_copy_is_copied_and_the_network_never_asked(fakes, tmp_path, monkeypatch):
    served, images = fakes
    shared = tmp_path / "shared"
    for name, blob in served.items():
        if name.startswith("/MNIST"):
            (shared / name[1:]).parent.mkdir(parents=True, exist_ok=True)
            (shared / name[1:]).write_bytes(blob)
    np.savez(shared / "cifar10.npz", x_train=images[:10], y_train=np.arange(10),
             x_test=images[10:], y_test=np.arange(2))
    for path in [*shared.rglob("*"), shared]:  # a read-only copy, as the shared folder is
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    monkeypatch.setenv(files.SHARED_ENV, str(shared))
    data_dir = tmp_path / "data"
    try:
        assert step(data_dir, "--mirror", f"http://127.0.0.1:{_closed_port()}") == 0
    finally:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert (data_dir / "cifar10.npz").read_bytes() == (shared / "cifar10.npz").read_bytes()
    _check_readable(data_dir, images)  # torchvision extracted beside the copied archives


def test_offline_with_nothing_local_says_what_to_copy_where(tmp_path, capsys):
    assert step(tmp_path / "data", "--mirror", f"http://127.0.0.1:{_closed_port()}",
                "--local-copy", str(tmp_path / "nowhere")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreachable" in err
    assert "lacks it too; offline, copy MNIST/raw/" in err and f"into {tmp_path / 'data'}" in err


def test_the_real_archives_are_the_published_ones():
    (cifar,) = sources.CIFAR10.sources()
    assert (cifar.url, cifar.checksum) == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                                           "md5:c58f30108f718f92721af3b95e74349a")
    assert "mnist" in files.targets() and files.targets()["mnist_cifar"] == (sources.MNIST,
                                                                             sources.CIFAR10)
    assert [f.name for f in files.for_sweep(QUICKSTART)] == ["mnist", "cifar10"] * 4


def test_targets_come_from_the_registry(tmp_path, capsys):
    own = files.Replaced("my_files", "my_folder/", folder="my_folder", probe="index.csv")

    class WithFiles(Toy):
        files = (own,)

    with DATASETS.temporary("with_files_for_test", WithFiles):
        assert files.targets()["my_files"] == (own,) == files.targets()["with_files_for_test"]
        assert own in files.everything()
        assert cli.main(["download", "--list"]) == 0
        assert "my_files: my_folder/" in capsys.readouterr().out
        (tmp_path / "my_folder").mkdir()
        (tmp_path / "my_folder" / "index.csv").touch()
        files.ensure(files.resolve(["with_files_for_test"]), tmp_path, files.How(progress=False))
    assert "my_files" not in files.targets()
    assert capsys.readouterr().out.startswith("my_files: already in")


@pytest.mark.real_data
def test_the_real_data_dir_has_the_declared_layout(real_data_dir):
    """The shared folder setup copies from (and a data dir made from it) holds every raw file
    set where its declaration looks: nothing there would be downloaded again."""
    for f in sources.RAW:
        assert f.entries(real_data_dir) is not None, f.name
