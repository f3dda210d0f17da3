"""MF-Dominoes (docs/METHODS.md §D.7): an MNIST 0/1 stacked on a FashionMNIST dress/coat.

After Shah et al. 2020 (Dominoes), as used by Pagliardini et al. 2023 (D-BAT), Lee et al. 2023
(DivDis) and Yang et al. 2022 (Chroma-VAE, Table 5).  An image is one channel, 56×28: the MNIST
digit in rows 0-27 (top), the FashionMNIST image in rows 28-55 (bottom); stored uint8, scaled
/255 on fetch.  y = the FashionMNIST class (core: 0 = dress, FashionMNIST class 3; 1 = coat,
class 4), s = the digit (spurious, 0 or 1), so g = 2y + s.

* ``train``: FashionMNIST-train dresses and coats minus the validation holdout, each with a digit
  s = y (complete correlation: the two minority groups are absent);
* ``val``: a seeded ``val_fraction`` of FashionMNIST-train dresses and coats (per class), with
  s independent of y: each class's images are split in halves (seeded), one half gets 0, the
  other 1, so all four groups are (within one example) equally large;
* ``test``: the 2,000 FashionMNIST-test dresses and coats, s assigned the same way, MNIST-test
  digits.

Digits come from the matching MNIST split (train/val from MNIST-train, with disjoint digit pools:
the same ``val_fraction`` of each digit class is reserved for val; test from MNIST-test).  Where a
split needs more digits of a class than its pool holds (e.g. 5,400 training dresses on ~5,300
zeros), the pool is dealt cyclically in a seeded order, so every digit is used ⌊n/p⌋ or ⌈n/p⌉
times.  The layout (MNIST on top, no padding to 64×32), the val size and the exact balance of
s in val/test are our choices (METHODS §D.7).  Every random decision uses the data seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checks import between
from . import register_dataset, sources
from .base import DatasetArgs, arg
from .cached import CachedTensorDataset
from .mnist_cifar import seeded_rng

#: FashionMNIST classes of y = 0, 1 (dress, coat) and MNIST digits of s = 0, 1
FASHION_CLASSES = (3, 4)
DIGITS = (0, 1)
# independent random streams, one per purpose
_HOLDOUT, _SPURIOUS_VAL, _SPURIOUS_TEST, _DEAL_TRAIN, _DEAL_VAL, _DEAL_TEST = range(6)


@dataclass(frozen=True)
class MFDominoesArgs(DatasetArgs):
    val_fraction: float = arg(0.1, float, between(0, 1))  # of FashionMNIST-train, per class


def class_members(labels: Tensor, classes: tuple[int, ...]) -> list[np.ndarray]:
    """Positions of each class of ``classes``, in order."""
    labels = labels.numpy()
    return [np.flatnonzero(labels == c) for c in classes]


def holdout(members: list[np.ndarray], fraction: float,
            rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(kept, held out) per class: a seeded ``fraction`` of every class is held out."""
    kept, out = [], []
    for idx in members:
        perm = rng.permutation(idx)
        n_out = int(len(idx) * fraction)
        kept.append(np.sort(perm[n_out:]))
        out.append(np.sort(perm[:n_out]))
    return kept, out


def balanced_attribute(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """s independent of y: within every class a seeded half gets s = 0, the rest s = 1."""
    s = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        s[idx[len(idx) // 2:]] = 1
    return s


def deal_digits(s: np.ndarray, pools: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """An MNIST position of digit class s[i] for every example, each pool dealt cyclically."""
    out = np.empty(len(s), dtype=np.int64)
    for value, pool in enumerate(pools):
        need = np.flatnonzero(s == value)
        out[need] = np.resize(rng.permutation(pool), len(need))
    return out


def stack(digits: Tensor, fashion: Tensor) -> Tensor:
    """uint8 [N, 1, 56, 28]: the digit on top of the FashionMNIST image."""
    return torch.cat([digits, fashion], dim=1).unsqueeze(1)


def _split(f_x: Tensor, f_idx: np.ndarray, y: np.ndarray, s: np.ndarray, m_x: Tensor,
           m_idx: np.ndarray) -> dict[str, Tensor]:
    return {"x": stack(m_x[torch.from_numpy(m_idx)], f_x[torch.from_numpy(f_idx)]),
            "y": torch.from_numpy(y), "s": torch.from_numpy(s),
            "fashion_idx": torch.from_numpy(f_idx), "mnist_idx": torch.from_numpy(m_idx)}


def generate(data_dir: Path, args: MFDominoesArgs, seed: int) -> dict[str, dict[str, Tensor]]:
    (ftr_x, ftr_y), (fte_x, fte_y) = (sources.fashion_mnist(data_dir, t) for t in (True, False))
    (mtr_x, mtr_y), (mte_x, mte_y) = (sources.mnist(data_dir, t) for t in (True, False))
    rng = lambda stream: seeded_rng(seed, stream)  # noqa: E731
    f_train, f_val = holdout(class_members(ftr_y, FASHION_CLASSES), args.val_fraction, rng(_HOLDOUT))
    m_train, m_val = holdout(class_members(mtr_y, DIGITS), args.val_fraction, rng(_HOLDOUT))
    f_test, m_test = class_members(fte_y, FASHION_CLASSES), class_members(mte_y, DIGITS)

    def labels(per_class: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.concatenate(per_class)
        return idx, np.repeat(np.arange(len(per_class)), [len(p) for p in per_class])

    (tr_idx, tr_y), (va_idx, va_y), (te_idx, te_y) = map(labels, (f_train, f_val, f_test))
    va_s = balanced_attribute(va_y, rng(_SPURIOUS_VAL))
    te_s = balanced_attribute(te_y, rng(_SPURIOUS_TEST))
    return {
        "train": _split(ftr_x, tr_idx, tr_y, tr_y.copy(), mtr_x,
                        deal_digits(tr_y, m_train, rng(_DEAL_TRAIN))),
        "val": _split(ftr_x, va_idx, va_y, va_s, mtr_x, deal_digits(va_s, m_val, rng(_DEAL_VAL))),
        "test": _split(fte_x, te_idx, te_y, te_s, mte_x, deal_digits(te_s, m_test, rng(_DEAL_TEST))),
    }


@register_dataset("mf_dominoes")
class MFDominoes(CachedTensorDataset):
    Args = MFDominoesArgs
    num_classes = 2
    input_shape = (1, 56, 28)
    provides = frozenset({"s", "g"})
    val_split = "val"
    id_split = None  # no split follows the training distribution (val, like test, has s ⊥ y)
    ood_split = "test"
    default_hparams = {"arch": "mnist_cnn"}

    files = (sources.MNIST, sources.FASHION_MNIST)

    def configure(self) -> None:
        self.num_attributes = len(DIGITS)

    def generate(self) -> dict[str, dict[str, Tensor]]:
        # every split also keeps where its two halves came from (fashion_idx, mnist_idx)
        return generate(self.data_dir, self.args, self.data_seed)
