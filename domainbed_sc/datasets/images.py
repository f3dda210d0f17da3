"""Disk-backed image splits: labels in memory, pixels read from disk by DataLoader workers.

``ImageSplit`` keeps y, s, e (and g) as tensors and the image paths as a compact numpy string
array.  The training stream (``batches``) and evaluation (``eval_batches``) run a
``torch.utils.data.DataLoader`` whose ``batch_sampler`` is the given stream of index tensors, so
workers decode and transform the next batches while the model trains on the current one.  The
loader returns batches in stream order whatever the number of workers.

Determinism: training augmentation of an example is seeded by a digest of the index tensor of its
batch plus its position in that batch.  The sampler's index tensors are pure functions of the
step, so augmentations do not depend on the worker count and a resumed run draws the same ones.
The loaders get their own ``torch.Generator`` so that creating one never consumes the global RNG
(which would break the trainer's bit-identical resume).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .base import Batch, Split
from .holdout import domainbed_holdout

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WORKERS_ENV = "DOMAINBED_SC_WORKERS"
#: evaluation batches of 224² images are capped: 2048 of them would be 1.2 GB per prefetched batch
EVAL_BATCH_CAP = 256

Transform = Callable[[Image.Image], Tensor]


def to_normalized_tensor() -> list:
    """The last steps of every image transform: [0, 1] tensor, then ImageNet normalisation."""
    from torchvision import transforms as T  # lazy: importing torchvision costs every run ~1 s

    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def resolve_workers(requested: int | None) -> int:
    """The dataset argument, else $DOMAINBED_SC_WORKERS, else min(4, CPU count)."""
    if requested is None:
        env = os.environ.get(WORKERS_ENV, "").strip()
        if not env:
            return min(4, os.cpu_count() or 1)
        if not env.isdigit():
            raise UserError(f"${WORKERS_ENV} must be a non-negative integer, got {env!r}")
        requested = int(env)
    if requested < 0:
        raise UserError(f"num_workers must be >= 0, got {requested}")
    return requested


@dataclass(frozen=True)
class ImageTransforms:
    """``eval`` for evaluation and fetch; ``train`` (random) for the training stream, or None."""

    eval: Transform
    train: Transform | None = None


class ImageFiles(Dataset):
    """Items are (index, seed): the image through ``eval`` (seed None) or ``train`` seeded."""

    def __init__(self, paths: np.ndarray, tf: ImageTransforms):
        self.paths = paths
        self.tf = tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[Tensor, int]:
        i, seed = item
        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        if seed is None:
            return self.tf.eval(img), i
        # fork_rng: with num_workers=0 this runs in the trainer's process, whose RNG must not move
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.tf.train(img), i


def augmentation_seeds(indices: Tensor) -> list[int]:
    """Per-example seeds: a digest of the batch's index tensor plus the position in it."""
    blob = indices.cpu().to(torch.int64).numpy().tobytes()
    base = int.from_bytes(hashlib.blake2b(blob, digest_size=7).digest(), "little")
    return [base + pos for pos in range(len(indices))]


@dataclass(frozen=True)
class ImageRows:
    """Image paths with their labels (e = -1 where there are no environments)."""

    paths: list[str]
    y: Tensor
    s: Tensor
    e: Tensor

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: Tensor) -> "ImageRows":
        return ImageRows([self.paths[i] for i in rows.tolist()], self.y[rows], self.s[rows],
                         self.e[rows])

    @staticmethod
    def cat(parts: Sequence["ImageRows"]) -> "ImageRows":
        return ImageRows([p for part in parts for p in part.paths],
                         *(torch.cat([getattr(part, k) for part in parts]) for k in "yse"))


def holdout_envs(envs: Sequence[ImageRows], fraction: float, data_seed: int,
                 env_ids: Sequence[int] | None = None) -> tuple[ImageRows, ImageRows]:
    """DomainBed's holdout of every environment: (kept parts, held-out parts).

    ``env_ids`` are the environments' indices in DomainBed's dataset (they seed the shuffles);
    by default 0, 1, … in the order given.
    """
    ids = range(len(envs)) if env_ids is None else env_ids
    cuts = [domainbed_holdout(len(env), fraction, data_seed, k)
            for k, env in zip(ids, envs, strict=True)]
    return (ImageRows.cat([env.take(keep) for env, (keep, _) in zip(envs, cuts)]),
            ImageRows.cat([env.take(out) for env, (_, out) in zip(envs, cuts)]))


class ImageSplit(Split):
    def __init__(self, rows: ImageRows, *, num_attributes: int, tf: ImageTransforms,
                 num_workers: int):
        super().__init__(rows.y, rows.s, rows.e, num_attributes)
        if len(rows.paths) != len(rows.y):
            raise ValueError(f"{len(rows.paths)} paths but {len(rows.y)} labels")
        # one fixed-width string array, not a list of str: forked workers then share its pages
        self.paths = np.asarray(rows.paths, dtype=str)
        self.files = ImageFiles(self.paths, tf)
        self.augment = tf.train is not None
        self.num_workers = num_workers

    def load_x(self, indices: Tensor) -> Tensor:
        """Eval-transformed pixels, read in this process (for a few examples)."""
        return torch.stack([self.files[(i, None)][0] for i in indices.cpu().tolist()])

    def batches(self, index_batches: Iterable[Tensor]) -> Iterator[Batch]:
        """The training stream: augmented when the split has a train transform."""
        return self._stream(index_batches, self.augment)

    def eval_batches(self, batch_size: int, indices: Tensor | None = None) -> Iterator[Batch]:
        order = torch.arange(len(self)) if indices is None else indices
        return self._stream(order.split(min(batch_size, EVAL_BATCH_CAP)), augment=False)

    def to(self, device: torch.device | str) -> "ImageSplit":
        """Labels stay on the CPU beside the pixels they travel with (``Batch.to`` moves both)."""
        return self

    def _stream(self, index_batches: Iterable[Tensor], augment: bool) -> Iterator[Batch]:
        def items(indices: Tensor) -> list[tuple[int, int | None]]:
            seeds = augmentation_seeds(indices) if augment else [None] * len(indices)
            return list(zip(indices.cpu().tolist(), seeds))

        loader = DataLoader(self.files, batch_sampler=map(items, index_batches),
                            num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                            generator=torch.Generator())
        for x, idx in loader:
            yield Batch(x, self.y[idx], self.s[idx], self.g[idx], self.e[idx], self.idx[idx])
