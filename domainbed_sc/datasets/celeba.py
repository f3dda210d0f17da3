"""CelebA (docs/METHODS.md §D.8) in its release layout, the one torchvision's ``CelebA`` reads:
``<data_dir>/celeba/img_align_celeba/*.jpg`` (178×218), ``list_attr_celeba.txt`` (a count line,
the 40 attribute names, then one ±1 row per image) and ``list_eval_partition.txt`` (0 train,
1 val, 2 test) [Liu et al. 2015].

y = the ``target`` attribute, s = the ``spurious`` attribute (by name, each 1 where the file says
+1), g = 2·y + s.  The default Blond_Hair × Male is the GroupDRO / WILDS benchmark [Sagawa et al.
2020; Koh et al. 2021]; Chroma-VAE also uses Attractive × Smiling.

``variant="official"``: the official partition, train / val / test.

``variant="ex2l_envs"`` (eX2L App. B.6, METHODS §D.8): two environments with App. B.6's group
proportions drawn from official train + val at the largest size the pool allows, a seeded 20 %
holdout of each as ``val``, the official test split for evaluation — Waterbirds' rule (§D.4).

``variant="chroma_harder"`` (Chroma-VAE's harder setting, after DivDis [Lee et al. 2023]): the
two groups that go against the training correlation of y and s are removed from ``train``, so s
determines y there; val and test keep all four groups.

``patch=True`` (Chroma-VAE §3, official partition only): s is a 10×10 blue patch at the top-left
corner of the model input, painted after every transform; it is on exactly the y = 1 training
images and on a seeded half of each class in val and test, so WGA measures reliance on it.

Transforms [GroupDRO]: eval = the central square (178×178 on the release), resize to
``image_size``, ImageNet normalisation; with ``augment`` the training stream uses
RandomResizedCrop(scale (0.7, 1), ratio (1, 4/3)) and a horizontal flip.

Download (``domainbed-sc download celeba``): torchvision's Google Drive files and MD5s
(``RELEASE``), fetched into ``<data_dir>/celeba`` by the resumable downloader (files.Fetched).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..checks import Check, non_negative, one_of, positive
from ..errors import UserError
from ..hparams import seed_hash
from . import register_dataset
from ..download import Archive
from .base import DatasetArgs, GroupDataset, arg, group_ids
from .files import Fetched
from .images import (IMAGENET_MEAN, IMAGENET_STD, ImageRows, ImageSplit, ImageTransforms,
                     resolve_workers, to_normalized_tensor)
from .sources import missing_data
from .waterbirds import ex2l_rows

if TYPE_CHECKING:
    import pandas as pd

FOLDER = "celeba"
IMAGES = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = {"train": 0, "val": 1, "test": 2}
#: the header of list_attr_celeba.txt, in its order
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
ATTRIBUTE = Check(lambda v: v in ATTRIBUTES, "a CelebA attribute name, e.g. Blond_Hair, Male, "
                  "Attractive, Smiling, Eyeglasses (40 in all, as in list_attr_celeba.txt)",
                  lists_values=True)
#: eX2L App. B.6, per environment, the share of g = 0..3 (non-blond female, non-blond male,
#: blond female, blond male); the paper lists male-blond, male-non-blond, female-blond,
#: female-non-blond.
EX2L_PROPORTIONS = ((0.4177, 0.4694, 0.1020, 0.0108),  # Env 1 "balanced"
                    (0.4679, 0.3519, 0.1736, 0.0066))  # Env 2 "less males"
PATCH = 10
BLUE = (0.0, 0.0, 1.0)
VARIANTS = ("official", "ex2l_envs", "chroma_harder")


@dataclass(frozen=True)
class CelebAArgs(DatasetArgs):
    target: str = arg("Blond_Hair", str, ATTRIBUTE)
    spurious: str = arg("Male", str, ATTRIBUTE)
    variant: str = arg("official", str, one_of(*VARIANTS))
    patch: bool = arg(False, bool)  # s = Chroma-VAE's blue patch instead of `spurious`
    augment: bool = arg(False, bool)
    image_size: int = arg(224, int, positive)
    # None: $DOMAINBED_SC_WORKERS, else min(4, CPUs)
    num_workers: int | None = arg(None, int, non_negative, nullable=True)

    def __post_init__(self) -> None:
        if self.target == self.spurious and not self.patch:
            raise UserError(f"celeba: target and spurious are both {self.target}; pick two attributes")
        if self.patch and self.variant != "official":
            raise UserError(f"celeba: patch works with variant official only, not {self.variant}")
        if self.variant == "ex2l_envs" and (self.target, self.spurious) != ("Blond_Hair", "Male"):
            raise UserError("celeba ex2l_envs: App. B.6 gives proportions for Blond_Hair x Male only")


class SquareCrop:
    """The central square of the image (GroupDRO's CenterCrop(178) on 178×218 release images)."""

    def __call__(self, img):
        from torchvision.transforms import functional as TF

        return TF.center_crop(img, [min(img.size)] * 2)


def transforms(size: int, augment: bool) -> ImageTransforms:
    from torchvision import transforms as T  # lazy: every run imports this module

    eval_tf = T.Compose([SquareCrop(), T.Resize((size, size)), *to_normalized_tensor()])
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(1.0, 4 / 3)),
                          T.RandomHorizontalFlip(), *to_normalized_tensor()])
    return ImageTransforms(eval_tf, train_tf if augment else None)


def read_table(path: Path, data_dir: Path, header: bool) -> "pd.DataFrame":
    """A release text file: whitespace-separated, the image name first (``header``: a count
    line and a names line before the rows, as list_attr_celeba.txt has)."""
    if not path.is_file():
        raise missing_data(f"CelebA {path.name}", path, data_dir, "celeba")
    import pandas as pd

    try:
        if header:  # the names line has one field fewer than the rows: the names are the index
            return pd.read_csv(path, sep=r"\s+", skiprows=1)
        return pd.read_csv(path, sep=r"\s+", header=None, index_col=0)
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot read {path} ({str(exc).strip().splitlines()[-1]})") from None


def read_release(data_dir: Path) -> tuple[list[str], "pd.DataFrame", Tensor]:
    """(image paths, the ±1 attribute table as 0/1, the official partition code per image)."""
    root = data_dir / FOLDER
    attrs = read_table(root / ATTR_FILE, data_dir, header=True)
    partition = read_table(root / PARTITION_FILE, data_dir, header=False)
    absent = [a for a in ATTRIBUTES if a not in attrs.columns]
    if absent:
        raise UserError(f"{root / ATTR_FILE} lacks attribute(s) {', '.join(absent[:5])}; "
                        "is it CelebA's list_attr_celeba.txt?")
    unlisted = attrs.index.difference(partition.index)
    if len(unlisted):
        raise UserError(f"{root / PARTITION_FILE} does not list {len(unlisted)} images of "
                        f"{ATTR_FILE} (e.g. {unlisted[0]})")
    img_dir = root / IMAGES
    present = set(os.listdir(img_dir)) if img_dir.is_dir() else set()
    missing = [f for f in attrs.index if f not in present]
    if missing:
        raise missing_data(f"{len(missing)} of {len(attrs)} CelebA images (e.g. {missing[0]})",
                           img_dir, data_dir, "celeba")
    split = torch.tensor(partition.loc[attrs.index].iloc[:, 0].to_numpy(), dtype=torch.long)
    return [str(img_dir / f) for f in attrs.index], (attrs > 0).astype("int64"), split


def against_correlation(y: Tensor, s: Tensor) -> tuple[int, int]:
    """The two groups g = 2y + s that go against the correlation of y and s (the smaller
    diagonal of the 2×2 table by the odds ratio): (0, 3) where y and s disagree more often than
    independence predicts, else (1, 2)."""
    n = torch.bincount(group_ids(y, s, 2), minlength=4).double()
    return (1, 2) if n[0] * n[3] >= n[1] * n[2] else (0, 3)


def patch_mask(y: Tensor, training: bool, data_seed: int, split: str) -> Tensor:
    """Where the blue patch goes: the y = 1 images in training; elsewhere a seeded half of each
    class (s independent of y, every group present)."""
    if training:
        return y == 1
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in (0, 1):
        members = torch.nonzero(y == c).flatten()
        gen = torch.Generator().manual_seed(seed_hash(data_seed, "celeba_patch", split, c))
        mask[members[torch.randperm(len(members), generator=gen)[:len(members) // 2]]] = True
    return mask


def paint_patch(x: Tensor, where: Tensor) -> Tensor:
    """The normalised blue square in the top-left corner of the images ``where`` is true."""
    blue = torch.tensor([(c - m) / sd for c, m, sd in zip(BLUE, IMAGENET_MEAN, IMAGENET_STD)],
                        dtype=x.dtype)
    x[where.to(x.device), :, :PATCH, :PATCH] = blue.to(x.device)[:, None, None]
    return x


class PatchedSplit(ImageSplit):
    """An image split whose examples with s = 1 carry the blue patch."""

    def load_x(self, indices: Tensor) -> Tensor:
        return paint_patch(super().load_x(indices), self.s[indices.cpu()] == 1)

    def _stream(self, index_batches, augment):
        for batch in super()._stream(index_batches, augment):
            batch.x = paint_patch(batch.x, batch.s == 1)
            yield batch


#: torchvision.datasets.CelebA.file_list for the files this loader reads: (Google Drive id, MD5, name)
RELEASE = (("0B7EVK8r0v71pZjFTYXZWM3FlRnM", "00d2c5bc6d35e252742224ab0c1e8fcb", "img_align_celeba.zip"),
           ("0B7EVK8r0v71pblRyaVFSWGxPY0U", "75e246fa4810816ffd6ee81facbd244c", ATTR_FILE),
           ("0B7EVK8r0v71pY0NSMzRuSXJEVkk", "d32c9cbf5e040fd4025c592c306e6668", PARTITION_FILE))
#: Drive's direct-download form (torchvision's own Drive helper needs gdown)
GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
FILES = Fetched("celeba", f"{FOLDER}/ (img_align_celeba/, {ATTR_FILE}, {PARTITION_FILE}: "
                "torchvision's CelebA layout)", folder=FOLDER,
                parts=tuple(Archive(GDRIVE_URL.format(id=i), name, f"md5:{md5}") for i, md5, name in RELEASE),
                unzip=("img_align_celeba.zip",), probe="img_align_celeba")


@register_dataset("celeba")
class CelebA(GroupDataset):
    Args = CelebAArgs
    num_classes = 2
    input_shape = (3, 224, 224)
    provides = frozenset({"s", "g"})
    val_split = "val"  # selection
    ood_split = "test"  # evaluation
    small_images = False
    default_hparams = {"arch": "resnet50"}
    files = (FILES,)

    @classmethod
    def variant_provides(cls, args: CelebAArgs) -> frozenset[str]:
        return frozenset({"s", "g", "e"}) if args.variant == "ex2l_envs" else cls.provides

    def __init__(self, data_dir, args: CelebAArgs, data_seed: int):
        super().__init__(data_dir, args, data_seed)
        self.num_attributes = 2
        self.input_shape = (3, args.image_size, args.image_size)
        # the official val split is drawn like training only where training is the official one
        self.id_split = "val" if args.variant == "official" and not args.patch else None
        paths, attrs, split = read_release(self.data_dir)
        y = torch.tensor(attrs[args.target].to_numpy())
        s = torch.tensor(attrs[args.spurious].to_numpy())
        rows = ImageRows(paths, y, s, torch.full((len(y),), -1, dtype=torch.long))
        if args.variant == "ex2l_envs":
            parts = dict(zip(SPLITS, ex2l_rows(rows, split, EX2L_PROPORTIONS, data_seed, "celeba")))
        else:
            parts = self._partition(rows, split)
        self.splits = {name: self._split(part, train=name == "train") for name, part in parts.items()}

    def _partition(self, rows: ImageRows, split: Tensor) -> dict[str, ImageRows]:
        """The official partition; chroma_harder filters its training part, patch sets s."""
        parts = {name: rows.take(torch.nonzero(split == code).flatten())
                 for name, code in SPLITS.items()}
        if self.args.variant == "chroma_harder":
            train = parts["train"]
            g, drop = group_ids(train.y, train.s, 2), against_correlation(train.y, train.s)
            parts["train"] = train.take(torch.nonzero((g != drop[0]) & (g != drop[1])).flatten())
        if self.args.patch:
            parts = {name: dataclasses.replace(part, s=patch_mask(part.y, name == "train",
                                                                  self.data_seed, name).long())
                     for name, part in parts.items()}
        return parts

    def _split(self, rows: ImageRows, train: bool) -> ImageSplit:
        args = self.args
        cls = PatchedSplit if args.patch else ImageSplit
        return cls(rows, num_attributes=2, tf=transforms(args.image_size, args.augment and train),
                   num_workers=resolve_workers(args.num_workers))

