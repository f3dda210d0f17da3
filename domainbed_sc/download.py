"""Fetch, verify and extract archives: the mechanism behind ``domainbed-sc download``.

What to fetch is declared by the datasets themselves (``GroupDataset.files``, datasets/files.py);
this module only moves bytes.  Archives are fetched with urllib into ``<name>.part``; a later call
resumes a partial file with an HTTP Range request (and starts over where the server ignores it).
A download is complete when its size equals the size the server announced and, where a digest
is published, its checksum matches; only then is it renamed to ``<name>``.  Extraction uses
tarfile's ``data`` filter (no absolute paths, no escaping the target).

A mirror (``--mirror`` / ``$DOMAINBED_SC_MIRROR``, an http(s):// or file:// base URL) replaces
every archive's URL by ``<mirror>/<its path in the data dir>``; the published checksums still
apply.

Every network failure becomes one ``UserError`` line, after at most ``timeout`` seconds of
silence from the server.
"""
from __future__ import annotations

import gzip
import hashlib
import re
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
MIRROR_ENV = "DOMAINBED_SC_MIRROR"


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    checksum: str | None = None  # "sha256:<hex>" or "md5:<hex>"; None where none is published


def mirrored(archives: tuple[Archive, ...], mirror: str | None,
             under: str = "") -> tuple[Archive, ...]:
    """``archives`` fetched from a mirror instead: one that holds every archive at the path it
    gets in the data dir (``under`` + file name), same names and checksums; so a copy of a data
    dir serves as a mirror."""
    if not mirror:
        return archives
    base = mirror.rstrip("/")
    return tuple(dict.fromkeys(Archive(f"{base}/{under}{a.filename}", a.filename, a.checksum)
                               for a in archives))


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


def dir_with(root: Path, name: str) -> Path:
    """``root`` or its single subfolder, whichever holds ``name`` (archives differ in nesting)."""
    if (root / name).exists():
        return root
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / name).exists():
        return subdirs[0]
    raise UserError(f"the extracted archive in {root} holds no {name}")
