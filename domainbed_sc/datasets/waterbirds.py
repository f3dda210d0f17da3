"""Waterbirds (docs/METHODS.md §D.4) in the WILDS ``waterbirds_v1.0`` layout under ``<data_dir>``.

``<data_dir>/waterbirds_v1.0/metadata.csv`` (img_id, img_filename, y, split, place,
place_filename) lists every image by its path relative to that folder.  y: 1 = waterbird;
s = place (0 land, 1 water); g = 2·y + place (GroupDRO's convention).  The metadata is read with
pandas rather than through ``wilds.WaterbirdsDataset``, which would start a network version
check on import; the layout is the same.

Split roles: ``val`` selects (``val_split``), ``test`` is the evaluation split (``ood_split``,
the collector's test columns).  Waterbirds has no in-distribution test split, so ``id_split`` is
None: the official val split is balanced within each class, not drawn like the training data.

``variant="standard"``: the official split column, train / val / test.

``variant="ex2l_envs"`` (eX2L App. B.6; METHODS §D.4, §C.29): two environments with
App. B.6's group proportions, drawn from the official train + val images only (pool g0..g3 =
3965 / 650 / 189 / 1190); ``test`` = the official test split (2255 / 2255 / 642 / 642, place
independent of y in each class: the minority groups "balanced out again"), never seen in training
or selection.  Both environments get N images, group g taking round(p_g·N) (half up), N the
largest size at which both fit the pool (``ex2l_group_counts``); the land-waterbird group (189)
binds at N = 1329:

    env 0 "land-centric": 821 / 244 / 110 / 154 = 1329   (61.78 / 18.36 / 8.28 / 11.59 %)
    env 1 "balanced":     595 / 401 /  79 / 253 = 1328   (44.80 / 30.20 / 5.95 / 19.05 %)

(App. B.6: 61.80 / 18.37 / 8.26 / 11.58 and 44.77 / 30.20 / 5.98 / 19.05 %; 3,337 pool images
stay unused).  Which images of a group go to env 0 / env 1 is a permutation seeded by
(data_seed, group).  Each environment is then split 80/20 by DomainBed's holdout: ``train`` =
the 80 % parts (1064 + 1063, e = env), ``val`` = the pooled 20 % parts (265 + 265), the
training-domain selection split.  Equal environment sizes are our choice (App. B.6 gives
proportions only; METHODS §D.4: roughly 1.3k images per environment).

Transforms: eval = resize to (size·256/224)², center crop ``image_size``, ImageNet normalisation
[GDRO]; with ``augment`` the training stream uses RandomResizedCrop(scale (0.7, 1), ratio
(3/4, 4/3)) and a horizontal flip instead.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..download import Archive
from ..errors import UserError
from ..hparams import seed_hash
from . import register_dataset
from ..checks import non_negative, one_of, positive
from .base import DatasetArgs, GroupDataset, arg, group_ids
from .files import Replaced
from .images import (ImageRows, ImageSplit, ImageTransforms, holdout_envs, resolve_workers,
                     to_normalized_tensor)
from .sources import missing_data

FOLDER = "waterbirds_v1.0"
#: METHODS §D.4: the WILDS v1.0 bundle (its files at the top level), then GroupDRO's original
#: tarball (one folder waterbird_complete95_forest2water2/ with the same metadata.csv and
#: images).  No checksum is published for either; the size and gzip CRC guard the transfer.
FILES = Replaced("waterbirds", f"{FOLDER}/ (metadata.csv and the image folders)", folder=FOLDER,
                 probe="metadata.csv", archives=(
    Archive("https://worksheets.codalab.org/rest/bundles/0x505056d5cdea4e4eaa0e242cbfe2daa4/"
            "contents/blob/", "waterbirds_v1.0.tar.gz"),
    Archive("https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz",
            "waterbird_complete95_forest2water2.tar.gz")))
COLUMNS = ("img_filename", "y", "split", "place")
SPLITS = {"train": 0, "val": 1, "test": 2}
#: eX2L App. B.6, per environment, the share of g = 0..3 (landbird/land, landbird/water,
#: waterbird/land, waterbird/water); the paper's columns are land/water-bird = g2, land/land-bird
#: = g0, water/water-bird = g3, water/land-bird = g1.
EX2L_PROPORTIONS = ((0.6180, 0.1837, 0.0826, 0.1158),  # Env 1 "land-centric"
                    (0.4477, 0.3020, 0.0598, 0.1905))  # Env 2 "balanced"
HOLDOUT = 0.2
VARIANTS = ("standard", "ex2l_envs")


@dataclass(frozen=True)
class WaterbirdsArgs(DatasetArgs):
    variant: str = arg("standard", str, one_of(*VARIANTS))
    augment: bool = arg(False, bool)
    image_size: int = arg(224, int, positive)
    # None: $DOMAINBED_SC_WORKERS, else min(4, CPUs)
    num_workers: int | None = arg(None, int, non_negative, nullable=True)


def transforms(size: int, augment: bool) -> ImageTransforms:
    from torchvision import transforms as T  # lazy, like pandas below: every run imports this module

    resized = round(size * 256 / 224)
    eval_tf = T.Compose([T.Resize((resized, resized)), T.CenterCrop(size), *to_normalized_tensor()])
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.75, 4 / 3)),
                          T.RandomHorizontalFlip(), *to_normalized_tensor()])
    return ImageTransforms(eval_tf, train_tf if augment else None)


def read_metadata(data_dir: Path) -> tuple[ImageRows, Tensor]:
    """(every image with y and s = place, the split column)."""
    root = data_dir / FOLDER
    path = root / "metadata.csv"
    if not path.exists():
        raise missing_data("Waterbirds metadata.csv", path, data_dir, "waterbirds")
    import pandas as pd

    meta = pd.read_csv(path)
    absent = [c for c in COLUMNS if c not in meta.columns]
    if absent:
        raise UserError(f"{path} lacks column(s) {', '.join(absent)}; is it WILDS waterbirds_v1.0?")
    missing = [f for f in meta["img_filename"] if not (root / f).is_file()]
    if missing:
        raise missing_data(f"{len(missing)} of {len(meta)} Waterbirds images (e.g. {missing[0]})",
                           root, data_dir, "waterbirds")
    y, place, split = (torch.tensor(meta[c].to_numpy(), dtype=torch.long)
                       for c in ("y", "place", "split"))
    rows = ImageRows([str(root / f) for f in meta["img_filename"]], y, place,
                     torch.full((len(y),), -1, dtype=torch.long))
    return rows, split


def ex2l_group_counts(pool: Sequence[int],
                      proportions: Sequence[Sequence[float]] = EX2L_PROPORTIONS) -> list[list[int]]:
    """Per environment, per group: round(p_g·N) images (half up), with N the largest size at
    which all environments together fit the ``pool`` counts of every group (METHODS §D.4)."""
    def counts(n: int) -> list[list[int]]:
        return [[math.floor(p * n + 0.5) for p in env] for env in proportions]

    def fits(n: int) -> bool:
        return all(sum(col) <= have for col, have in zip(zip(*counts(n)), pool))

    # rounding takes at most 0.5 per environment off p·N, so no larger N can fit
    n = min(math.floor((have + 0.5 * len(proportions)) / sum(ps))
            for have, ps in zip(pool, zip(*proportions)))
    while n > 0 and not fits(n):  # fits() is monotone in n
        n -= 1
    return counts(n)


def ex2l_environments(g: Tensor, counts: list[list[int]], data_seed: int, salt: str) -> Tensor:
    """e per example: in every group, a permutation seeded by (data_seed, ``salt``, group) gives
    its first counts[0][g] members env 0, the next counts[1][g] env 1; the rest get -1 (unused)."""
    e = torch.full((len(g),), -1, dtype=torch.long)
    for group in range(len(counts[0])):
        members = torch.nonzero(g == group).flatten()
        gen = torch.Generator().manual_seed(seed_hash(data_seed, salt, group))
        members = members[torch.randperm(len(members), generator=gen)]
        start = 0
        for env, env_counts in enumerate(counts):
            e[members[start:start + env_counts[group]]] = env
            start += env_counts[group]
    return e


def ex2l_rows(rows: ImageRows, split: Tensor, proportions: Sequence[Sequence[float]],
              data_seed: int, dataset: str) -> tuple[ImageRows, ImageRows, ImageRows]:
    """eX2L's environments (METHODS §D.4, §D.8): (train, val, test) rows, the environments drawn
    from official train + val (split codes 0, 1) with ``proportions``, selection on their 20 %
    holdout, test = the official test split (code 2)."""
    pool = rows.take(torch.nonzero(split != SPLITS["test"]).flatten())
    g = group_ids(pool.y, pool.s, 2)
    counts = ex2l_group_counts(torch.bincount(g, minlength=4).tolist(), proportions)
    if min(map(min, counts)) < 1 or int(min(map(sum, counts)) * HOLDOUT) < 1:
        raise UserError(f"{dataset} ex2l_envs: too few train + val images to give both "
                        f"environments every group and a validation holdout (counts {counts})")
    salt = f"{dataset}_ex2l"
    pool = dataclasses.replace(pool, e=ex2l_environments(g, counts, data_seed, salt))
    envs = [pool.take(torch.nonzero(pool.e == k).flatten()) for k in range(len(counts))]
    train, val = holdout_envs(envs, HOLDOUT, data_seed)
    return train, val, rows.take(torch.nonzero(split == SPLITS["test"]).flatten())


@register_dataset("waterbirds")
class Waterbirds(GroupDataset):
    Args = WaterbirdsArgs
    num_classes = 2
    input_shape = (3, 224, 224)
    provides = frozenset({"s", "g"})
    val_split = "val"  # selection
    ood_split = "test"  # evaluation; no ID test split exists (module docstring)
    small_images = False
    default_hparams = {"arch": "resnet50"}
    files = (FILES,)

    @classmethod
    def variant_provides(cls, args: WaterbirdsArgs) -> frozenset[str]:
        return frozenset({"s", "g", "e"}) if args.variant == "ex2l_envs" else cls.provides

    def __init__(self, data_dir, args: WaterbirdsArgs, data_seed: int):
        super().__init__(data_dir, args, data_seed)
        self.num_attributes = 2
        self.input_shape = (3, args.image_size, args.image_size)
        rows, split = read_metadata(self.data_dir)
        if args.variant == "standard":
            self.splits = {name: self._split(rows.take(torch.nonzero(split == code).flatten()),
                                             train=name == "train")
                           for name, code in SPLITS.items()}
        else:
            self._ex2l_splits(rows, split)

    def _ex2l_splits(self, rows: ImageRows, split: Tensor) -> None:
        train, val, test = ex2l_rows(rows, split, EX2L_PROPORTIONS, self.data_seed, "waterbirds")
        self.splits = {"train": self._split(train, train=True), "val": self._split(val, train=False),
                       "test": self._split(test, train=False)}

    def _split(self, rows: ImageRows, train: bool) -> ImageSplit:
        args = self.args
        return ImageSplit(rows, num_attributes=2, tf=transforms(args.image_size, args.augment and train),
                          num_workers=resolve_workers(args.num_workers))
