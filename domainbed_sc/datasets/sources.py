"""Raw sources: MNIST, FashionMNIST and CIFAR-10 as uint8 tensors, read from the data dir.

MNIST and FashionMNIST go through torchvision's normal ``download=True`` path: with the original
archives in ``<data_dir>/<Name>/raw`` it verifies and extracts them without any network.
CIFAR-10 is read from torchvision's own files when they exist, else from ``cifar10.npz``
(keys x_train, y_train, x_test, y_test; uint8 NHWC), decoded once and cached as tensors.
``RAW`` declares these files for ``domainbed-sc download`` (files.py); datasets built on them
list the ones they read in their ``files``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..cache import cached_tensors
from ..errors import UserError
from .files import TorchvisionArchive, TorchvisionRaw

DATA_ENV = "DOMAINBED_SC_DATA"
HOW_TO_GET = ("copy the shared data folder there, set --data-dir / ${env}, "
              "or run `domainbed-sc download {what} --data-dir {dir}`")


MNIST = TorchvisionRaw("mnist", "MNIST/raw/ (torchvision's 4 MNIST .gz archives)", cls_name="MNIST")
FASHION_MNIST = TorchvisionRaw("fashion_mnist", "FashionMNIST/raw/ (torchvision's 4 .gz archives)",
                               cls_name="FashionMNIST")
#: torchvision's cifar-10-python.tar.gz (MD5 c58f30108f718f92721af3b95e74349a) unpacks to
#: cifar-10-batches-py/; the shared data folder's cifar10.npz holds the same images
CIFAR10 = TorchvisionArchive("cifar10", "cifar10.npz (or torchvision's cifar-10-batches-py/)",
                             folder="cifar-10-batches-py", alternatives=("cifar10.npz",),
                             cls_name="CIFAR10")
RAW = (MNIST, FASHION_MNIST, CIFAR10)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """--data-dir, else $DOMAINBED_SC_DATA, else ./data."""
    return Path(data_dir or os.environ.get(DATA_ENV) or "data").expanduser().resolve()


def missing_data(what: str, path: Path, data_dir: Path, download_name: str) -> UserError:
    """The error for absent raw files: what is missing, where, and how to get it."""
    how = HOW_TO_GET.format(env=DATA_ENV, what=download_name, dir=data_dir)
    return UserError(f"{what} not found at {path}: {how}")


def cache_dir(data_dir: Path) -> Path:
    return data_dir / "cache"


def _torchvision_mnist(files: TorchvisionRaw, data_dir: Path, train: bool) -> tuple[Tensor, Tensor]:
    from torchvision import datasets

    cls_name, download_name = files.cls_name, files.name
    raw = data_dir / cls_name / "raw"
    cls = getattr(datasets, cls_name)
    if files.entries(data_dir) is None:
        raise missing_data(cls_name, raw, data_dir, download_name)
    extracted = [p.with_suffix("") for p in files.raw_files(data_dir)]
    fix = f"run `domainbed-sc download {download_name} --data-dir {data_dir}`"
    if not all(q.exists() for q in extracted):
        _check_archives(cls, raw, cls_name, fix)
    try:
        ds = cls(root=str(data_dir), train=train, download=True)
    except (RuntimeError, ValueError, OSError) as exc:  # e.g. a truncated extracted file
        line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read {cls_name} from {raw} ({line}): "
                        f"delete the damaged files and {fix}") from None
    return ds.data.clone(), ds.targets.clone()


def _check_archives(cls, raw: Path, cls_name: str, fix: str) -> None:
    """Without the extracted files torchvision extracts every archive, and one failing its
    checksum sends it to the network, whose error would blame the network, not the file."""
    from torchvision.datasets.utils import check_integrity

    for name, md5 in cls.resources:
        path = raw / name.rsplit("/", 1)[-1]
        if not path.exists():
            raise UserError(f"{cls_name} archive {path} is missing: {fix}")
        if not check_integrity(str(path), md5):
            raise UserError(f"corrupt {cls_name} archive {path} (checksum mismatch, e.g. a truncated "
                            f"copy): delete it and {fix}")


def mnist(data_dir: Path, train: bool) -> tuple[Tensor, Tensor]:
    """(images uint8 [N, 28, 28], labels int64 [N])."""
    return _torchvision_mnist(MNIST, data_dir, train)


def fashion_mnist(data_dir: Path, train: bool) -> tuple[Tensor, Tensor]:
    return _torchvision_mnist(FASHION_MNIST, data_dir, train)


def _read_cifar10(data_dir: Path) -> dict[str, Tensor]:
    tv_dir = data_dir / "cifar-10-batches-py"
    if tv_dir.exists():
        from torchvision import datasets

        parts = [datasets.CIFAR10(root=str(data_dir), train=t, download=False) for t in (True, False)]
        arrays = [(p.data, np.asarray(p.targets)) for p in parts]
    else:
        npz = data_dir / "cifar10.npz"
        if not npz.exists():
            raise missing_data("CIFAR-10", npz, data_dir, "cifar10")
        with np.load(npz) as d:
            arrays = [(d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])]
    out = {}
    for split, (x, y) in zip(("train", "test"), arrays):
        out[f"x_{split}"] = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
        out[f"y_{split}"] = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return out


def cifar10(data_dir: Path) -> dict[str, Tensor]:
    """x_train [50000, 3, 32, 32] uint8, y_train, x_test [10000, 3, 32, 32], y_test."""
    return cached_tensors(cache_dir(data_dir), "cifar10", {"v": 1}, lambda: _read_cifar10(data_dir))
