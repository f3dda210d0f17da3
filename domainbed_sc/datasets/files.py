"""What a dataset reads from the data dir and how to get it (``domainbed-sc download``).

Datasets own their files, as WILDS datasets own their versions: a dataset class lists them in
``files`` (``DataFiles``: the folder, the archives with their URLs and published checksums), and
the download targets are generated from the dataset registry.  Three kinds cover our data:

* ``TorchvisionRaw``: the MNIST / FashionMNIST archives into ``<Name>/raw``, from the mirrors and
  MD5s torchvision publishes (``mirrors``, ``resources``); torchvision verifies and extracts them
  on first read (sources.py);
* ``Unpacked``: archives that unpack into one folder of the data dir (Spawrious, CIFAR-10); a
  marker in that folder records a complete extraction;
* ``Replaced``: archives that unpack, in one of several nestings, to a folder holding ``probe``,
  which becomes ``folder`` (Waterbirds);
* ``Fetched``: files fetched one by one into ``folder``, the zips among them then unpacked
  (CelebA's release).

``ensure`` is the data step of setup: every file set not in the data dir yet is copied from a
local copy (``--local-copy`` / $DOMAINBED_SC_SHARED) where that holds it, else downloaded
(download.py, checksums verified); offline with nothing local, one line says what to copy where.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .. import download as dl
from ..errors import UserError

SHARED_ENV = "DOMAINBED_SC_SHARED"


@dataclass(frozen=True)
class How:
    """Where files come from: ``local_copy`` (a folder in the data-dir layout) before the
    network; ``mirror`` replaces every archive's URL (download.py)."""

    timeout: float = dl.DEFAULT_TIMEOUT
    progress: bool = True
    mirror: str | None = None
    local_copy: Path | None = None


@dataclass(frozen=True)
class DataFiles:
    """One downloadable file set.  ``name`` is its download target; ``layout`` what a copy by
    hand looks like under the data dir; ``part_of`` the larger file set that holds this one."""

    name: str
    layout: str
    part_of: str | None = None

    def entries(self, root: Path) -> list[str] | None:
        """The top-level entries of ``root`` that hold these files, or None if incomplete."""
        raise NotImplementedError

    def fetch(self, data_dir: Path, how: How) -> None:
        raise NotImplementedError


def _torchvision(cls_name: str):
    from torchvision import datasets  # lazy: importing torchvision costs ~1 s

    return getattr(datasets, cls_name)


@dataclass(frozen=True)
class TorchvisionRaw(DataFiles):
    cls_name: str = ""

    def raw_files(self, root: Path) -> list[Path]:
        return [root / self.cls_name / "raw" / f for f, _ in _torchvision(self.cls_name).resources]

    def entries(self, root: Path) -> list[str] | None:
        # the archive, or the file torchvision extracts from it
        have = all(p.exists() or p.with_suffix("").exists() for p in self.raw_files(root))
        return [self.cls_name] if have else None

    def fetch(self, data_dir: Path, how: How) -> None:
        cls = _torchvision(self.cls_name)
        raw = data_dir / self.cls_name / "raw"
        for filename, md5 in cls.resources:
            mirrors = tuple(dl.Archive(f"{m}{filename}", filename, f"md5:{md5}") for m in cls.mirrors)
            dl.fetch_first(dl.mirrored(mirrors, how.mirror, f"{self.cls_name}/raw/"), raw,
                           how.timeout, how.progress)


@dataclass(frozen=True)
class Unpacked(DataFiles):
    folder: str = ""
    archives: tuple[dl.Archive, ...] = ()  # mirrors of one archive: the first that downloads
    alternatives: tuple[str, ...] = ()  # data-dir entries holding the same data in another layout

    def markers(self, root: Path) -> list[Path]:
        return [root / self.folder / f".complete-{n}" for n in (self.name, self.part_of) if n]

    def entries(self, root: Path) -> list[str] | None:
        if any(marker.exists() for marker in self.markers(root)):
            return [self.folder]
        return next(([alt] for alt in self.alternatives if (root / alt).exists()), None)

    def sources(self) -> tuple[dl.Archive, ...]:
        return self.archives

    def fetch(self, data_dir: Path, how: How) -> None:
        archive = dl.fetch_first(dl.mirrored(self.sources(), how.mirror), data_dir, how.timeout,
                                 how.progress)
        dl.extract(archive, data_dir, how.progress)
        if not (data_dir / self.folder).is_dir():
            raise UserError(f"{archive.name} did not contain {self.folder}/")
        self.markers(data_dir)[0].touch()  # written last: an interrupted extraction is redone
        archive.unlink()


@dataclass(frozen=True)
class TorchvisionArchive(Unpacked):
    """An archive torchvision publishes (``url``, ``filename``, ``tgz_md5``), e.g. CIFAR-10."""

    cls_name: str = ""

    def sources(self) -> tuple[dl.Archive, ...]:
        cls = _torchvision(self.cls_name)
        return (dl.Archive(cls.url, cls.filename, f"md5:{cls.tgz_md5}"),)


@dataclass(frozen=True)
class Replaced(DataFiles):
    folder: str = ""
    archives: tuple[dl.Archive, ...] = ()
    probe: str = ""  # a file at the top of the extracted data

    def entries(self, root: Path) -> list[str] | None:
        return [self.folder] if (root / self.folder / self.probe).exists() else None

    def fetch(self, data_dir: Path, how: How) -> None:
        archive = dl.fetch_first(dl.mirrored(self.archives, how.mirror), data_dir, how.timeout,
                                 how.progress)
        final, staging = data_dir / self.folder, data_dir / f".{self.folder}.extracting"
        shutil.rmtree(staging, ignore_errors=True)
        dl.extract(archive, staging, how.progress)
        shutil.rmtree(final, ignore_errors=True)  # a folder without the probe is a broken leftover
        dl.dir_with(staging, self.probe).replace(final)
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink()


@dataclass(frozen=True)
class Fetched(DataFiles):
    folder: str = ""
    parts: tuple[dl.Archive, ...] = ()  # each file of the release, with its checksum
    unzip: tuple[str, ...] = ()  # the parts to unpack into ``folder`` (then deleted)
    probe: str = ""  # what a complete copy holds besides the plain parts (the unpacked folder)

    def entries(self, root: Path) -> list[str] | None:
        folder = root / self.folder
        plain = [a.filename for a in self.parts if a.filename not in self.unzip]
        have = (folder / f".complete-{self.name}").exists() or (
            (folder / self.probe).exists() and all((folder / f).exists() for f in plain))
        return [self.folder] if have else None

    def fetch(self, data_dir: Path, how: How) -> None:
        root = data_dir / self.folder
        for part in dl.mirrored(self.parts, how.mirror, f"{self.folder}/"):
            dl.fetch_first((part,), root, how.timeout, how.progress)
        for name in self.unzip:
            dl.extract_zip(root / name, root, how.progress)
            (root / name).unlink()
        (root / f".complete-{self.name}").touch()  # written last: an interrupted step is redone


# -- targets ----------------------------------------------------------------------------------
def file_sets() -> dict[str, DataFiles]:
    """Every file set the raw sources and the registered datasets declare, by name."""
    from . import DATASETS, sources

    out: dict[str, DataFiles] = {}
    for f in [*sources.RAW, *(f for n in DATASETS.names() for f in DATASETS.get(n).files)]:
        out.setdefault(f.name, f)
    return out


def targets() -> dict[str, tuple[DataFiles, ...]]:
    """Target name -> file sets: every file set by its own name, then every dataset with files
    by the dataset's name (the files its default arguments read)."""
    from . import DATASETS

    out = {name: (f,) for name, f in file_sets().items()}
    for cls in map(DATASETS.get, DATASETS.names()):
        if cls.files:
            out.setdefault(cls.name, cls.files_for(cls.Args()))
    return out


def everything() -> list[DataFiles]:
    """``all``: every file set that is not part of a larger one."""
    return [f for f in file_sets().values() if f.part_of is None]


def resolve(names: Iterable[str]) -> list[DataFiles]:
    known = targets()
    unknown = sorted(set(names) - set(known) - {"all"})
    if unknown:
        raise UserError(f"unknown download target(s) {', '.join(unknown)}; "
                        f"known: {', '.join(known)}, all")
    return [f for n in names for f in (everything() if n == "all" else known[n])]


def for_sweep(path: str | os.PathLike) -> list[DataFiles]:
    """The file sets the runs of a sweep file read."""
    from ..sweep.spec import load_sweep
    from . import DATASETS

    out = []
    for run in load_sweep(path).runs():
        cls = DATASETS.get(run.dataset)
        out += cls.files_for(cls.parse_args(run.dataset_args))
    return out


# -- the data step ----------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> None:
    """Copy without permission bits (a shared copy may be read-only, and torchvision extracts
    beside the archives); a file appears under its name only once complete."""
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            _copy(child, dst / child.name)
    elif not dst.exists():
        tmp = dst.with_name(f".{dst.name}.copying")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)


def ensure(files: Iterable[DataFiles], data_dir: Path, how: How) -> None:
    """Every file set in ``data_dir``: already there, else copied from the local copy, else
    downloaded."""
    data_dir.mkdir(parents=True, exist_ok=True)
    local = how.local_copy
    for f in dict.fromkeys(files):
        if f.entries(data_dir) is not None:
            print(f"{f.name}: already in {data_dir}")
        elif local is not None and (found := f.entries(local)) is not None:
            for entry in found:
                _copy(local / entry, data_dir / entry)
            print(f"{f.name}: copied from {local} into {data_dir}")
        else:
            _download(f, data_dir, how)
            print(f"{f.name}: ready in {data_dir}")


def _download(f: DataFiles, data_dir: Path, how: How) -> None:
    try:
        f.fetch(data_dir, how)
    except UserError as exc:
        offline = f"offline, copy {f.layout} into {data_dir}"
        if how.local_copy is None:
            raise UserError(f"{exc}; {offline}, or name a folder that holds it with --local-copy "
                            f"or ${SHARED_ENV}") from None
        raise UserError(f"{exc}; the local copy {how.local_copy} lacks it too; {offline}") from None
