"""Fetch, verify and extract the real data sets into a data dir (``domainbed-sc download``).

Archives are fetched with urllib into ``<name>.part``; a later call resumes a partial file with
an HTTP Range request (and starts over where the server ignores it).  A download is complete when
its size equals the size the server announced and, where a digest is published, its checksum
matches; only then is it renamed to ``<name>``.  No digest is published for the Waterbirds and
Spawrious archives, so for those the size check and the gzip CRC checked during extraction are
what guard against a bad transfer.  Extraction uses tarfile's ``data`` filter (no absolute paths,
no escaping the target) and the archive is deleted afterwards.  MNIST, FashionMNIST and CIFAR-10
go through torchvision's own ``download=True`` path, which checks its MD5s.  CelebA's files are
torchvision's (Google Drive ids and MD5s on ``datasets.celeba.CelebA``), fetched here and
MD5-checked; its image zip is unpacked by ``extract_zip`` with the same containment rule.

Every network failure becomes one ``UserError`` line, after at most ``timeout`` seconds of
silence from the server.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from .errors import UserError

DEFAULT_TIMEOUT = 15.0
CHUNK = 1 << 20
USER_AGENT = "domainbed-sc"


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    checksum: str | None = None  # "sha256:<hex>" or "md5:<hex>"; None where none is published


# docs/METHODS.md §D.4: the WILDS v1.0 bundle (its files at the top level), then GroupDRO's original
# tarball (one folder waterbird_complete95_forest2water2/ with the same metadata.csv and images).
WATERBIRDS = (
    Archive("https://worksheets.codalab.org/rest/bundles/0x505056d5cdea4e4eaa0e242cbfe2daa4/"
            "contents/blob/", "waterbirds_v1.0.tar.gz"),
    Archive("https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz",
            "waterbird_complete95_forest2water2.tar.gz"),
)
WATERBIRDS_DIR = "waterbirds_v1.0"


def _dropbox(key: str, filename: str) -> Archive:
    return Archive(f"https://www.dropbox.com/s/{key}/{filename}?dl=1", filename)


# METHODS §D.5: every archive holds spawrious224/...; the whole dataset serves every challenge.
SPAWRIOUS = {
    "spawrious": (_dropbox("e40j553480h3f3s", "spawrious224.tar.gz"),
                  _dropbox("hofkueo8qvaqlp3", "spawrious224__entire_dataset.tar.gz")),
    "spawrious_o2o_easy": (_dropbox("kwhiv60ihxe3owy", "spawrious224__o2o_easy.tar.gz"),),
    "spawrious_o2o_medium": (_dropbox("x03gkhdwar5kht4", "spawrious224__o2o_medium.tar.gz"),),
    "spawrious_o2o_hard": (_dropbox("p1ry121m2gjj158", "spawrious224__o2o_hard.tar.gz"),),
}
SPAWRIOUS_DIR = "spawrious224"

TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
TARGETS = ("waterbirds", *SPAWRIOUS, "celeba", *TORCHVISION)
ALL = ("waterbirds", "spawrious", "celeba", "mnist", "fashion_mnist", "cifar10")


# -- fetching ---------------------------------------------------------------------------------
def _unreachable(url: str, reason: object, timeout: float) -> UserError:
    host = urlsplit(url).netloc
    return UserError(f"cannot download {url}: {host} unreachable ({reason}; timeout {timeout:g}s); "
                     "check the network or fetch the file by hand")


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={start}-"} if start else {})}
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left past `start`: the partial file is whole
            return None
        raise UserError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _unreachable(url, exc.reason, timeout) from None
    except (OSError, HTTPException) as exc:
        raise _unreachable(url, exc, timeout) from None


def _content_range(resp) -> tuple[int, int | None]:
    """(first byte, total size) of a 206 response."""
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
    if m is None:
        raise UserError(f"cannot download {resp.url}: unreadable Content-Range in a 206 reply")
    return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))


def _receive(resp, part: Path, have: int, progress: bool) -> int | None:
    """Write the body to ``part`` (appending a 206 at ``have``); returns the expected total."""
    length = resp.headers.get("Content-Length")
    if resp.status == 206:
        first, total = _content_range(resp)
        if first != have:
            part.unlink()
            raise UserError(f"cannot resume {resp.url}: the server sent bytes from {first}, not "
                            f"{have}; the partial file was deleted, run the command again")
    else:  # 200: the server ignored the Range header, start over
        have, total = 0, int(length) if length is not None else None
    with open(part, "ab" if have else "wb") as f, \
            tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.name[:-len(".part")], disable=not progress, leave=False) as bar:
        try:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        except (OSError, HTTPException) as exc:
            raise UserError(f"download of {resp.url} interrupted after {f.tell()} bytes ({exc}); "
                            "run the command again to resume") from None
    return total


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, checksum: str | None) -> None:
    """Delete ``path`` and raise if it does not match ``checksum`` ("<algorithm>:<hex>")."""
    if checksum is None:
        return
    algorithm, expected = checksum.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        path.unlink()
        raise UserError(f"{path.name}: {algorithm} {actual} does not match the published {expected}; "
                        "the file was deleted, run the command again")


def fetch(url: str, dest: Path, checksum: str | None = None, timeout: float = DEFAULT_TIMEOUT,
          progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, and return ``dest``."""
    dest = Path(dest)
    if dest.exists():
        verify(dest, checksum)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    resp = _open(url, have, timeout)
    if resp is not None:
        with resp:
            total = _receive(resp, part, have, progress)
        size = part.stat().st_size
        if total is not None and size != total:
            raise UserError(f"download of {url} incomplete ({size} of {total} bytes); "
                            "run the command again to resume")
    verify(part, checksum)
    part.replace(dest)
    return dest


def fetch_first(archives: tuple[Archive, ...], directory: Path, timeout: float,
                progress: bool) -> Path:
    """The first of ``archives`` that downloads (the others are mirrors)."""
    errors = []
    for archive in archives:
        try:
            return fetch(archive.url, directory / archive.filename, archive.checksum, timeout, progress)
        except UserError as exc:
            errors.append(str(exc))
            if len(errors) < len(archives):
                print(f"{exc} -- trying the next mirror")
    raise UserError(errors[-1] if len(errors) == 1 else
                    f"all {len(errors)} mirrors failed; last: {errors[-1]}")


# -- extracting -------------------------------------------------------------------------------
def extract(archive: Path, into: Path, progress: bool = True) -> None:
    """Unpack a (compressed) tar archive into ``into``; a corrupt archive is deleted."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        with open(archive, "rb") as raw, \
                tqdm.wrapattr(raw, "read", total=archive.stat().st_size, desc=f"extract {archive.name}",
                              disable=not progress, leave=False) as f, \
                tarfile.open(fileobj=f, mode="r|*") as tar:
            tar.extractall(into, filter="data")
    except tarfile.FilterError as exc:
        raise UserError(f"{archive} has an unsafe member ({exc}); not extracted further") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        archive.unlink(missing_ok=True)
        raise UserError(f"{archive.name} is not a valid archive ({exc}); it was deleted, "
                        "run the command again") from None


def extract_zip(archive: Path, into: Path, progress: bool = True) -> None:
    """Unpack a zip archive into ``into``, refusing members that would land outside it; a corrupt
    archive is deleted."""
    into = into.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            unsafe = [m.filename for m in members if not (into / m.filename).resolve().is_relative_to(into)]
            if unsafe:
                raise UserError(f"{archive} has an unsafe member ({unsafe[0]}); not extracted")
            for member in tqdm(members, desc=f"extract {archive.name}", disable=not progress, leave=False):
                zf.extract(member, into)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        archive.unlink(missing_ok=True)
        raise UserError(f"{archive.name} is not a valid zip archive ({exc}); it was deleted, "
                        "run the command again") from None


def _dir_with(root: Path, name: str) -> Path:
    """``root`` or its single subfolder, whichever holds ``name`` (archives differ in nesting)."""
    if (root / name).exists():
        return root
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / name).exists():
        return subdirs[0]
    raise UserError(f"the extracted archive in {root} holds no {name}")


# -- targets ----------------------------------------------------------------------------------
def download_waterbirds(data_dir: Path, timeout: float, progress: bool) -> None:
    final = data_dir / WATERBIRDS_DIR
    if (final / "metadata.csv").exists():
        print(f"waterbirds: already in {final}")
        return
    archive = fetch_first(WATERBIRDS, data_dir, timeout, progress)
    staging = data_dir / f".{WATERBIRDS_DIR}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    extract(archive, staging, progress)
    shutil.rmtree(final, ignore_errors=True)  # a folder without metadata.csv is a broken leftover
    _dir_with(staging, "metadata.csv").replace(final)
    shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()
    print(f"waterbirds: ready in {final}")


def download_spawrious(name: str, data_dir: Path, timeout: float, progress: bool) -> None:
    root = data_dir / SPAWRIOUS_DIR
    done = [root / f".complete-{n}" for n in (name, "spawrious")]
    if any(marker.exists() for marker in done):
        print(f"{name}: already in {root}")
        return
    archive = fetch_first(SPAWRIOUS[name], data_dir, timeout, progress)
    extract(archive, data_dir, progress)
    if not root.is_dir():
        raise UserError(f"{archive.name} did not contain {SPAWRIOUS_DIR}/")
    done[0].touch()  # written last: an interrupted extraction is redone
    archive.unlink()
    print(f"{name}: ready in {root}")


def download_torchvision(name: str, data_dir: Path, timeout: float) -> None:
    from torchvision import datasets

    cls_name = TORCHVISION[name]
    if name == "cifar10" and (data_dir / "cifar10.npz").exists():
        print(f"cifar10: already in {data_dir / 'cifar10.npz'}")
        return
    log = io.StringIO()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torchvision opens its URLs without a timeout
    try:
        with contextlib.redirect_stdout(log):  # torchvision prints every failed mirror
            getattr(datasets, cls_name)(root=str(data_dir), download=True)
    except (RuntimeError, OSError, urllib.error.URLError) as exc:
        reasons = re.findall(r"<urlopen error (.*?)>", f"{log.getvalue()} {exc}")
        reason = reasons[-1] if reasons else " ".join(str(exc).split())
        raise UserError(f"cannot download {cls_name} through torchvision ({reason}; "
                        f"timeout {timeout:g}s); check the network") from None
    finally:
        socket.setdefaulttimeout(previous)
    print(f"{name}: ready in {data_dir}")


def download(targets: list[str], data_dir: Path, timeout: float = DEFAULT_TIMEOUT,
             progress: bool = True) -> None:
    names = [n for t in targets for n in (ALL if t == "all" else (t,))]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        raise UserError(f"unknown download target(s) {', '.join(unknown)}; "
                        f"known: {', '.join(TARGETS)}, all")
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(names):
        if name == "waterbirds":
            download_waterbirds(data_dir, timeout, progress)
        elif name in SPAWRIOUS:
            download_spawrious(name, data_dir, timeout, progress)
        elif name == "celeba":  # the dataset class owns its file list (METHODS §D.7)
            from .datasets.celeba import CelebA

            CelebA.download(data_dir, timeout, progress)
        else:
            download_torchvision(name, data_dir, timeout)
