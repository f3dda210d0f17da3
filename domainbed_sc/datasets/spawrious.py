"""Spawrious (docs/METHODS.md §D.5) in its release layout
``<data_dir>/spawrious224/{0,1}/{location}/{breed}/``.

y = breed (bulldog, corgi, dachshund, labrador), s = location (desert, jungle, dirt, mountain,
snow, beach), g = 6·y + s.  Environments follow DomainBed's ``SpawriousBenchmark``:
SC_group_1 (e = 0), SC_group_2 (e = 1) and Test (e = 2), built from the table of METHODS §D.5 with
T = ``per_folder`` images per folder (3,168 in the release; smaller for test fixtures):

- O2O: SC_group_1 takes, per breed, ⌊0.97T⌋ images of ``0/{core}`` and T − ⌊0.97T⌋ of
  ``0/{filler}``; SC_group_2 takes ⌊0.87T⌋ of ``1/{core}`` and T − ⌊0.87T⌋ of ``1/{filler}``;
  Test holds all T images of ``0/{test}`` and of ``1/{test}``.
- M2M: folder 0 only; SC_group_k takes all T images of the k-th training location; Test all T
  images of both test locations.

Files are taken in sorted order (the reference code's ``os.listdir`` order depends on the file
system).  Splits: ``train`` = 80 % of each SC group, ``val`` = the other 20 % (DomainBed's
holdout), ``test`` = all of Test (the paper and the official code evaluate on the whole test
environment; DomainBed would report its 80 % in-part; METHODS §C.36).  The holdout is DomainBed's
``misc.split_dataset(env, int(len(env)·0.2), seed_hash(trial_seed, env_i))`` with DomainBed's
environment index env_i (Test = 0, SC_group_1 = 1, SC_group_2 = 2) and our ``data_seed`` as its
trial seed: with the same file order, ``data_seed`` s gives DomainBed's in/out split of
``--trial_seed s`` position for position (as CMNIST does).

Transforms [DB ``SpawriousBenchmark``; SPW's first release]: eval = resize to ``image_size``²,
ImageNet normalisation; the training stream is augmented by default, as DomainBed
(``data_augmentation`` defaults to True) and the official package (``augment=True``) run it:
resize, horizontal flip, ColorJitter(0.3, 0.3, 0.3, 0.3), RandomGrayscale.  ``val`` and ``test``
are never augmented; ``augment: false`` turns it off for training too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..download import Archive
from ..errors import UserError
from . import register_dataset
from ..checks import non_negative, one_of, positive
from .base import DatasetArgs, GroupDataset, arg
from .files import DataFiles, Unpacked
from .images import (ImageRows, ImageSplit, ImageTransforms, holdout_envs, resolve_workers,
                     to_normalized_tensor)
from .sources import missing_data

FOLDER = "spawrious224"
BREEDS = ("bulldog", "corgi", "dachshund", "labrador")  # y
LOCATIONS = ("desert", "jungle", "dirt", "mountain", "snow", "beach")  # s
EXTENSIONS = (".png", ".jpg", ".jpeg")
CORE_SHARE = (0.97, 0.87)  # O2O: share of SC_group_1 / SC_group_2 from the core location
HOLDOUT = 0.2
TEST_ENV = 2
#: DomainBed's indices of SC_group_1 and SC_group_2 (ENVIRONMENTS = ["Test", "SC_group_1", ...])
DOMAINBED_ENV_IDS = (1, 2)


def _dropbox(key: str, filename: str) -> Archive:
    return Archive(f"https://www.dropbox.com/s/{key}/{filename}?dl=1", filename)


def _package(name: str, *archives: Archive, part_of: str | None = "spawrious") -> Unpacked:
    """Release archives (mirrors of one package) that unpack into spawrious224/; no checksums
    are published, so the size and the gzip CRC guard the transfer."""
    return Unpacked(name, f"{FOLDER}/{{0,1}}/{{location}}/{{breed}}/", folder=FOLDER,
                    archives=archives, part_of=part_of)


# METHODS §D.5: the whole dataset serves every challenge; an O2O challenge also has its own package
WHOLE = _package("spawrious", _dropbox("e40j553480h3f3s", "spawrious224.tar.gz"),
                 _dropbox("hofkueo8qvaqlp3", "spawrious224__entire_dataset.tar.gz"), part_of=None)
PACKAGES = {c: _package(f"spawrious_{c}", _dropbox(key, f"spawrious224__{c}.tar.gz"))
            for c, key in (("o2o_easy", "kwhiv60ihxe3owy"), ("o2o_medium", "x03gkhdwar5kht4"),
                           ("o2o_hard", "p1ry121m2gjj158"))}


# METHODS §D.5, one string per breed in the table's order: "train location(s)>test location(s)".
TABLE_BREEDS = ("bulldog", "dachshund", "labrador", "corgi")
TABLE = {  # challenge: (bulldog, dachshund, labrador, corgi, filler)
    "o2o_easy": ("desert>dirt", "jungle>snow", "dirt>desert", "snow>jungle", "beach"),
    "o2o_medium": ("mountain>jungle", "beach>dirt", "dirt>beach", "jungle>snow", "desert"),
    "o2o_hard": ("jungle>mountain", "mountain>snow", "snow>desert", "desert>jungle", "beach"),
    "m2m_easy": ("desert,mountain>dirt,jungle", "mountain,desert>jungle,dirt",
                 "dirt,jungle>mountain,desert", "jungle,dirt>desert,mountain", None),
    "m2m_medium": ("beach,snow>desert,mountain", "snow,beach>mountain,desert",
                   "mountain,desert>beach,snow", "desert,mountain>snow,beach", None),
    "m2m_hard": ("dirt,jungle>snow,beach", "jungle,dirt>beach,snow",
                 "snow,beach>dirt,jungle", "beach,snow>jungle,dirt", None),
}


@dataclass(frozen=True)
class SpawriousArgs(DatasetArgs):
    challenge: str = arg("o2o_easy", str, one_of(*TABLE))
    per_folder: int = arg(3168, int, positive)  # T: images per {0,1}/{location}/{breed} folder
    augment: bool = arg(True, bool)  # DomainBed's and the official code's default
    image_size: int = arg(224, int, positive)
    # None: $DOMAINBED_SC_WORKERS, else min(4, CPUs)
    num_workers: int | None = arg(None, int, non_negative, nullable=True)


@dataclass(frozen=True)
class Take:
    """The first ``count`` sorted images of ``{folder}/{location}/{breed}``."""

    folder: int
    location: str
    breed: str
    count: int


def environments(challenge: str, t: int) -> list[list[Take]]:
    """[SC_group_1, SC_group_2, Test] as lists of takes, in DomainBed's concatenation order."""
    rows = TABLE[challenge]
    routes = {b: [part.split(",") for part in row.split(">")] for b, row in zip(TABLE_BREEDS, rows)}
    filler = rows[-1]
    if filler is not None:  # O2O: one core location per breed, topped up from the filler
        envs = []
        for k, share in enumerate(CORE_SHARE):
            core = int(share * t)
            envs.append([Take(k, routes[b][0][0], b, core) for b in TABLE_BREEDS]
                        + [Take(k, filler, b, t - core) for b in TABLE_BREEDS])
        test = [Take(k, routes[b][1][0], b, t) for k in (0, 1) for b in TABLE_BREEDS]
    else:  # M2M: folder 0, the k-th training location makes SC_group_k
        envs = [[Take(0, routes[b][0][k], b, t) for b in TABLE_BREEDS] for k in (0, 1)]
        test = [Take(0, routes[b][1][k], b, t) for k in (0, 1) for b in TABLE_BREEDS]
    return envs + [test]


def transforms(size: int, augment: bool) -> ImageTransforms:
    from torchvision import transforms as T  # lazy: every run imports this module

    eval_tf = T.Compose([T.Resize((size, size)), *to_normalized_tensor()])
    train_tf = T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(),
                          T.ColorJitter(0.3, 0.3, 0.3, 0.3), T.RandomGrayscale(),
                          *to_normalized_tensor()])
    return ImageTransforms(eval_tf, train_tf if augment else None)


def list_take(root: Path, take: Take, data_dir: Path) -> list[str]:
    folder = root / str(take.folder) / take.location / take.breed
    if not folder.is_dir():
        raise missing_data(f"Spawrious folder {take.folder}/{take.location}/{take.breed}", folder,
                           data_dir, "spawrious")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(EXTENSIONS))
    if len(names) < take.count:
        raise UserError(f"spawrious: {folder} holds {len(names)} images, {take.count} needed "
                        "(is per_folder right? is the download complete?)")
    return [str(folder / n) for n in names[:take.count]]


@register_dataset("spawrious")
class Spawrious(GroupDataset):
    Args = SpawriousArgs
    num_classes = len(BREEDS)
    input_shape = (3, 224, 224)
    provides = frozenset({"s", "g", "e"})
    val_split = "val"
    id_split = "val"
    ood_split = "test"
    small_images = False
    default_hparams = {"arch": "resnet50"}
    files = (WHOLE, *PACKAGES.values())

    @classmethod
    def files_for(cls, args: SpawriousArgs) -> tuple[DataFiles, ...]:
        """An O2O challenge's own package (the whole dataset counts too); M2M needs the whole."""
        return (PACKAGES.get(args.challenge, WHOLE),)

    def __init__(self, data_dir, args: SpawriousArgs, data_seed: int):
        super().__init__(data_dir, args, data_seed)
        self.num_attributes = len(LOCATIONS)
        self.input_shape = (3, args.image_size, args.image_size)
        root = self.data_dir / FOLDER
        if not root.is_dir():
            raise missing_data("Spawrious", root, self.data_dir, "spawrious")
        envs = [self._env(root, takes, k)
                for k, takes in enumerate(environments(args.challenge, args.per_folder))]
        train, val = holdout_envs(envs[:TEST_ENV], HOLDOUT, data_seed, DOMAINBED_ENV_IDS)
        self.splits = {"train": self._split(train, train=True), "val": self._split(val, train=False),
                       "test": self._split(envs[TEST_ENV], train=False)}

    def _env(self, root: Path, takes: list[Take], env: int) -> ImageRows:
        paths, y, s = [], [], []
        for take in takes:
            files = list_take(root, take, self.data_dir)
            paths += files
            y += [BREEDS.index(take.breed)] * len(files)
            s += [LOCATIONS.index(take.location)] * len(files)
        return ImageRows(paths, torch.tensor(y, dtype=torch.long), torch.tensor(s, dtype=torch.long),
                         torch.full((len(paths),), env, dtype=torch.long))

    def _split(self, rows: ImageRows, train: bool) -> ImageSplit:
        args = self.args
        return ImageSplit(rows, num_attributes=len(LOCATIONS),
                          tf=transforms(args.image_size, args.augment and train),
                          num_workers=resolve_workers(args.num_workers))
