"""On-disk cache of generated tensors, keyed by the arguments that generated them.

Generated datasets depend only on their generation arguments and a data seed, so the first run
builds them and every later run (and every job of a sweep) loads them with ``torch.load(mmap)``.
Writes are atomic (temporary file + rename), so a killed generator never leaves a bad entry.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .errors import UserError


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of a JSON-serialisable object, independent of dict order and the process."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@contextmanager
def disk_full_is_user_error(path: Path) -> Iterator[None]:
    """A write that fails because the disk (or quota) is full: one line naming the file."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left on device writing {path}") from None
        raise


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with disk_full_is_user_error(path), open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def cached_tensors(cache_dir: Path, kind: str, key: dict[str, Any],
                   build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Return ``build()``, computing it only when no cache entry for (kind, key) exists."""
    path = Path(cache_dir) / f"{kind}-{stable_hash(key)}.pt"
    if path.exists():
        return torch.load(path, mmap=True, weights_only=True)
    value = build()
    atomic_torch_save(value, path)
    return value
