"""MNIST-CIFAR, the DL thesis's background-shortcut benchmark (docs/METHODS.md §D.1, §C.3–§C.5).

Black MNIST digits are stamped onto CIFAR-10 backgrounds.  Every digit class c owns a set B_c of
N = ``n_backgrounds`` CIFAR images (the sets are pairwise disjoint), so the background identifies
the class and N controls how strong that shortcut is.

Generation, as METHODS §D.1 gives it (after Cazacu 2026, §3.1 and App. A):

* digits: MNIST, zero-padded 28→32 (2 px a side), 3 channels, rendered black through the binary
  mask m = 1[digit/255 > t]: ``out = bg * (1 - m)`` (§D.1 step 3, t = ``mask_threshold``, §C.3);
* backgrounds: the pooled 60k CIFAR-10 images, global id = train index, or 50,000 + test index
  (§D.1 step 2, §C.5);
* class balance: every class is subsampled at random to the smallest class (5,421/class in
  MNIST-train = 54,210; 892/class in MNIST-test = 8,920) (§D.1 step 1);
* ``train``: MNIST-train digits of class c, shuffled, then dealt round-robin over B_c, so every
  background gets ⌊n_c/N⌋ or ⌈n_c/N⌉ digits (§D.1 step 4, §C.4);
* ``test_id``: the MNIST-test digits dealt the same way over the same B_c;
* ``test_ood``: the *same* MNIST-test digits (paired with ``test_id``), each on its own background
  drawn without replacement from the pool that excludes ∪B_c (§D.1, §C.5); s = -1 there.

s = c·N + j for the j-th background of B_c, a bijection of the 10N train/ID backgrounds onto
0..10N-1, so g = y·10N + s.  The global CIFAR ids are kept as ``bg_id`` (and the sets as
``bg_sets``, shape [10, N]) in the cache and on the dataset.

Our choices beyond the thesis (METHODS §C.34; all invisible to the contract):

* every random decision has its own numpy stream derived from (data_seed, purpose) through
  ``SeedSequence``, which takes any non-negative integer (the thesis seeds reach 4,190,266,093);
  so for a given seed the balanced digit subsets are the same for every N;
* B_c(N) is the first N entries of column c of one seeded permutation of the pool, so for a given
  seed the background sets are nested across N (B_c(N) ⊂ B_c(2N)), making the N grid a
  controlled comparison.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import register_dataset, sources
from ..checks import between
from .base import DatasetArgs, arg
from .cached import CachedTensorDataset

NUM_CLASSES = 10
CIFAR_POOL = 60_000
# the OOD pool must still hold one distinct background per MNIST-test sample (8,920)
MAX_BACKGROUNDS = (CIFAR_POOL - 8_920) // NUM_CLASSES
# independent random streams, one per purpose
_BALANCE_TRAIN, _BALANCE_TEST, _BACKGROUNDS, _DEAL_TRAIN, _DEAL_TEST, _OOD = range(6)


@dataclass(frozen=True)
class MnistCifarArgs(DatasetArgs):
    n_backgrounds: int = arg(8, int, between(1, MAX_BACKGROUNDS, False, False))
    mask_threshold: float = arg(0.5, float, between(0, 1, lo_open=False))


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    """A numpy generator for one purpose.  Negative seeds wrap modulo 2**64, as torch's do."""
    return np.random.default_rng(np.random.SeedSequence(seed % 2**64, spawn_key=(stream,)))


def balance_classes(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random subset with every class cut to the smallest class size, sorted."""
    n_min = np.bincount(labels, minlength=NUM_CLASSES).min()
    chosen = [rng.choice(np.flatnonzero(labels == c), n_min, replace=False)
              for c in range(NUM_CLASSES)]
    return np.sort(np.concatenate(chosen))


def deal_round_robin(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Background slot j in 0..n-1 per sample: shuffle each class, then deal slots in turn."""
    order = np.lexsort((rng.permutation(len(y)), y))  # by class, random within a class
    class_start = np.searchsorted(y[order], y[order])  # first position of each sample's class
    slot = np.empty(len(y), dtype=np.int64)
    slot[order] = (np.arange(len(y)) - class_start) % n
    return slot


def draw_backgrounds(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(B [10, n] global CIFAR ids, disjoint across classes; the remaining pool, sorted)."""
    perm = rng.permutation(CIFAR_POOL)
    sets = perm[:NUM_CLASSES * n].reshape(n, NUM_CLASSES).T  # nested across n, see docstring
    return np.ascontiguousarray(sets), np.sort(perm[NUM_CLASSES * n:])


def cifar_images(cifar: dict[str, Tensor], ids: np.ndarray) -> Tensor:
    """uint8 [len(ids), 3, 32, 32] for global ids of the pooled train+test CIFAR-10."""
    ids_t = torch.from_numpy(ids)
    n_train = len(cifar["x_train"])
    out = torch.empty((len(ids), 3, 32, 32), dtype=torch.uint8)
    in_train = ids_t < n_train
    out[in_train] = cifar["x_train"][ids_t[in_train]]
    out[~in_train] = cifar["x_test"][ids_t[~in_train] - n_train]
    return out


def stamp_digits(digits: Tensor, backgrounds: Tensor, threshold: float) -> Tensor:
    """Black digits: zero-pad to 32x32, m = 1[digit/255 > t], out = bg * (1 - m) (uint8)."""
    # the smallest intensity d with d/255 > t; comparing integers avoids a float copy of 54k images
    first_on = int(torch.nonzero(torch.arange(256, dtype=torch.float64) / 255 > threshold)[0])
    padded = torch.zeros((len(digits), 32, 32), dtype=torch.uint8)
    padded[:, 2:30, 2:30] = digits
    return backgrounds.masked_fill_((padded >= first_on).unsqueeze(1), 0)


def _split(digits: Tensor, labels: np.ndarray, keep: np.ndarray, bg_id: np.ndarray,
           s: np.ndarray, cifar: dict[str, Tensor], threshold: float) -> dict[str, Tensor]:
    x = stamp_digits(digits[torch.from_numpy(keep)], cifar_images(cifar, bg_id), threshold)
    return {"x": x, "y": torch.from_numpy(labels[keep]), "s": torch.from_numpy(s),
            "bg_id": torch.from_numpy(bg_id), "mnist_idx": torch.from_numpy(keep)}


def generate(data_dir: Path, args: MnistCifarArgs, data_seed: int) -> dict[str, Any]:
    """The three splits (uint8 x, y, s, bg_id, mnist_idx) and bg_sets; depends on (args, seed)."""
    n, t = args.n_backgrounds, args.mask_threshold
    cifar = sources.cifar10(data_dir)
    (tr_x, tr_y), (te_x, te_y) = (sources.mnist(data_dir, train) for train in (True, False))
    tr_y, te_y = tr_y.numpy(), te_y.numpy()
    tr_keep = balance_classes(tr_y, seeded_rng(data_seed, _BALANCE_TRAIN))
    te_keep = balance_classes(te_y, seeded_rng(data_seed, _BALANCE_TEST))
    sets, pool = draw_backgrounds(n, seeded_rng(data_seed, _BACKGROUNDS))

    def on_class_sets(labels: np.ndarray, keep: np.ndarray, stream: int):
        y = labels[keep]
        slot = deal_round_robin(y, n, seeded_rng(data_seed, stream))
        return sets[y, slot], y * n + slot

    tr_bg, tr_s = on_class_sets(tr_y, tr_keep, _DEAL_TRAIN)
    id_bg, id_s = on_class_sets(te_y, te_keep, _DEAL_TEST)
    # each OOD sample gets a background of its own, never seen in train/ID
    ood_bg = seeded_rng(data_seed, _OOD).choice(pool, len(te_keep), replace=False)
    return {
        "train": _split(tr_x, tr_y, tr_keep, tr_bg, tr_s, cifar, t),
        "test_id": _split(te_x, te_y, te_keep, id_bg, id_s, cifar, t),
        "test_ood": _split(te_x, te_y, te_keep, ood_bg, np.full(len(te_keep), -1), cifar, t),
        "bg_sets": torch.from_numpy(sets),
    }


@register_dataset("mnist_cifar")
class MnistCifar(CachedTensorDataset):
    Args = MnistCifarArgs
    num_classes = NUM_CLASSES
    input_shape = (3, 32, 32)
    provides = frozenset({"s", "g"})
    val_split = None  # the thesis trains 10 epochs and reports the last checkpoint
    id_split = "test_id"
    ood_split = "test_ood"
    default_hparams = {"arch": "lenet5"}
    files = (sources.MNIST, sources.CIFAR10)
    #: the module docstring's background sets [10, N], and per split the global CIFAR id of
    #: every background and the MNIST index of every digit
    bg_sets: Tensor
    bg_id: dict[str, Tensor]
    mnist_idx: dict[str, Tensor]

    def configure(self) -> None:
        self.num_attributes = NUM_CLASSES * self.args.n_backgrounds

    def generate(self) -> dict[str, Any]:
        return generate(self.data_dir, self.args, self.data_seed)


def generate_many(data_dir: Path, data_seed: int, n_values: list[int],
                  mask_threshold: float = 0.5) -> list[MnistCifar]:
    """Pre-generate (and cache) one dataset per N for a seed, the thesis's N grid (METHODS §D.1)."""
    return [MnistCifar(Path(data_dir), MnistCifarArgs(n, mask_threshold), data_seed)
            for n in n_values]
