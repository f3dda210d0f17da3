"""Waterbirds (SPEC §2.4) in the WILDS ``waterbirds_v1.0`` layout under ``<data_dir>``.

``<data_dir>/waterbirds_v1.0/metadata.csv`` (img_id, img_filename, y, split, place,
place_filename) lists every image by its path relative to that folder.  y: 1 = waterbird;
s = place (0 land, 1 water); g = 2·y + place (GroupDRO's convention).  The metadata is read with
pandas rather than through ``wilds.WaterbirdsDataset``, which would start a network version
check on import; the layout is the same.

``variant="standard"``: the official split column, train / val / test (val doubles as the ID
split, test is the OOD split).

``variant="ex2l_envs"`` (eX2L App. B.6 as reconstructed in §2.4, evaluation per §7.11): all
11,788 images are pooled; in every group, exactly round(p·n_g) images (half up) go to env 0, with
p = 0.55 for land and 0.35 for water backgrounds, chosen by a permutation seeded by (data_seed,
group); the rest are env 1.  Each environment is split 80/20 by DomainBed's holdout: ``train`` =
both 80 % parts (e = env), ``val`` = the pooled 20 % parts, which are also the evaluation split.

Transforms: eval = resize to (size·256/224)², center crop ``image_size``, ImageNet normalisation
[GDRO]; with ``augment`` the training stream uses RandomResizedCrop(scale (0.7, 1), ratio
(3/4, 4/3)) and a horizontal flip instead.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from ..hparams import seed_hash
from . import register_dataset
from ..checks import non_negative, one_of, positive
from .base import DatasetArgs, GroupDataset, arg, group_ids
from .images import (ImageRows, ImageSplit, ImageTransforms, holdout_envs, resolve_workers,
                     to_normalized_tensor)
from .sources import missing_data

FOLDER = "waterbirds_v1.0"
COLUMNS = ("img_filename", "y", "split", "place")
SPLITS = {"train": 0, "val": 1, "test": 2}
ENV0_P = (0.55, 0.35)  # ex2l_envs: P(env 0) for land (place 0) and water (place 1) backgrounds
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


def ex2l_environments(g: Tensor, data_seed: int) -> Tensor:
    """Env 0 gets exactly round(p·n_g) of every group g (p by its place), env 1 the rest."""
    e = torch.ones(len(g), dtype=torch.long)
    for group in range(4):
        members = torch.nonzero(g == group).flatten()
        k = math.floor(ENV0_P[group % 2] * len(members) + 0.5)
        gen = torch.Generator().manual_seed(seed_hash(data_seed, "waterbirds_ex2l", group))
        e[members[torch.randperm(len(members), generator=gen)[:k]]] = 0
    return e


@register_dataset("waterbirds")
class Waterbirds(GroupDataset):
    Args = WaterbirdsArgs
    num_classes = 2
    input_shape = (3, 224, 224)
    provides = frozenset({"s", "g"})
    val_split = "val"
    id_split = "val"
    ood_split = "test"
    small_images = False
    default_hparams = {"arch": "resnet50"}

    @classmethod
    def provides_for(cls, args: WaterbirdsArgs) -> frozenset[str]:
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
            self._ex2l_splits(rows)

    def _ex2l_splits(self, rows: ImageRows) -> None:
        self.ood_split = "val"  # §7.11: AA/WGA on the pooled 20 % parts
        e = ex2l_environments(group_ids(rows.y, rows.s, 2), self.data_seed)
        rows = dataclasses.replace(rows, e=e)
        envs = [rows.take(torch.nonzero(e == k).flatten()) for k in (0, 1)]
        train, val = holdout_envs(envs, HOLDOUT, self.data_seed)
        self.splits = {"train": self._split(train, train=True), "val": self._split(val, train=False)}

    def _split(self, rows: ImageRows, train: bool) -> ImageSplit:
        args = self.args
        return ImageSplit(rows, num_attributes=2, tf=transforms(args.image_size, args.augment and train),
                          num_workers=resolve_workers(args.num_workers))
