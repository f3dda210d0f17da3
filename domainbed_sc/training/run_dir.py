"""A run directory's safety: one process at a time, one run per dir, no code in checkpoints.

* ``lock``: the claim.  The process running a run holds an exclusive non-blocking ``flock`` on it
  (the kernel drops it when the process dies, so a killed run never stays claimed) and writes its
  pid and host into it, so that a second process can say who holds it.  Sweep launchers claim a
  job before training it; ``train`` claims its dir too unless this process already holds it;
* ``run.json``: the identity of the run (``RunArgs.run_id()`` and the arguments), written
  atomically when the dir is first used; a different run is refused, never silently resumed;
* ``diverged``: written when the training loss became non-finite (and ``done`` never is);
  ``done`` (``mark_done``) is written last; ``log.txt`` gets the run's own lines (``run_logs``);
* ``checkpoint.pt`` is loaded with ``weights_only=True``: a checkpoint whose unpickling would run
  code is refused, and one that cannot be read is renamed ``checkpoint.pt.corrupt-<time>`` (never
  deleted) and the run restarts from scratch.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from ..cache import atomic_write_bytes
from ..errors import UserError
from .records import (CHECKPOINT, DONE, RESULTS, RunArgs, args_id, decode_config, encode_config,
                      json_safe, read_records)

LOCK_FILE = "lock"
RUN_FILE = "run.json"
DIVERGED = "diverged"
#: the temporary files ``cache.atomic_write_bytes`` writes (".<name>.<pid>.tmp")
TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")
#: files only a run's claim holder writes, so a dead writer's temp copy of them is garbage
RUN_FILES = {CHECKPOINT, RESULTS, DONE, RUN_FILE, DIVERGED}

_held: set[str] = set()  # run dirs whose claim this process holds


class RunDiverged(UserError):
    """The training loss became non-finite; the run stops and its dir gets a ``diverged`` marker."""


# -- the claim -------------------------------------------------------------------------------
class Claim:
    """An exclusive flock on ``<dir>/lock``; held until ``release`` or the process ends."""

    def __init__(self, fd: int, key: str):
        self.fd, self.key = fd, key
        _held.add(key)

    def release(self) -> None:
        _held.discard(self.key)
        os.close(self.fd)  # closing the only descriptor drops the flock


def _key(run_dir: Path) -> str:
    return os.path.realpath(run_dir)


def try_claim(run_dir: Path, attempts: int = 3) -> Claim | None:
    """The claim, or None if another process holds it.  A few short retries, because ``status``
    takes the lock for an instant to test it; a running job holds it for the whole run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.05)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        return Claim(fd, _key(run_dir))
    os.close(fd)
    return None


def is_claimed(run_dir: Path) -> bool:
    """Whether some process (this one included) holds the claim; tests it without taking it."""
    if not (run_dir / LOCK_FILE).exists():
        return False
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR)  # (NFS emulates flock with write locks)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def holder(run_dir: Path) -> str:
    """Who holds the claim, as the holder wrote it into the lock file."""
    for _ in range(20):  # the holder writes its name just after taking the lock
        try:
            info = json.loads((run_dir / LOCK_FILE).read_text())
            return f"process {info['pid']} on host {info['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "another process"


@contextmanager
def claimed(run_dir: Path) -> Iterator[None]:
    """Hold the dir's claim (unless this process already does) or raise a one-line error."""
    if _key(run_dir) in _held:
        yield
        return
    claim = try_claim(run_dir)
    if claim is None:
        raise UserError(f"run dir {run_dir} is in use by {holder(run_dir)}; "
                        "wait for it to finish or stop it")
    try:
        yield
    finally:
        claim.release()


# -- identity, leftovers, markers ------------------------------------------------------------
def recorded_args(run_dir: Path) -> dict[str, Any] | None:
    """The arguments of the run this dir belongs to: run.json, else (older dirs) a record's."""
    try:
        return decode_config(json.loads((run_dir / RUN_FILE).read_text())["args"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return next((r["args"] for r in read_records(run_dir / RESULTS) if isinstance(r.get("args"), dict)), None)


def check_identity(run_dir: Path, args: RunArgs) -> None:
    """Refuse a dir that belongs to another run; record this run's identity in a fresh one."""
    theirs, ours = recorded_args(run_dir), args.as_dict()
    if theirs is not None and args_id(theirs) != args.run_id():
        diffs = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        raise UserError(f"{run_dir} holds another run (id {args_id(theirs)}); this run "
                        f"differs in {', '.join(diffs)}: give another --output-dir")
    if not (run_dir / RUN_FILE).exists():
        write_json(run_dir / RUN_FILE, {"run_id": args.run_id(), "args": encode_config(ours)})


def write_json(path: Path, obj: Any) -> None:
    blob = json.dumps(json_safe(obj), allow_nan=False, indent=1).encode()
    atomic_write_bytes(path, lambda f: f.write(blob))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid lives on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(run_dir: Path) -> None:
    """Delete the temp files a killed writer left of the run's own files.  Only those: other
    writers (e.g. a launcher writing job.json, maybe from another host, whose pid means nothing
    here) may be alive.  Call with the claim held: only its holder writes the run's files."""
    for path in run_dir.iterdir():
        m = TEMP_FILE.match(path.name)
        if m and m["name"] in RUN_FILES and not pid_alive(int(m["pid"])):
            path.unlink(missing_ok=True)


def mark_done(run_dir: Path) -> None:
    """Written last, after the final record and checkpoint (the run is complete)."""
    atomic_write_bytes(run_dir / DONE, lambda f: f.write(b"done\n"))


def last_step(run_dir: Path) -> int:
    """The step of the run's last record, -1 without any."""
    return max((r["step"] for r in read_records(run_dir / RESULTS)), default=-1)


def run_log(run_dir: Path) -> logging.Logger:
    """The logger whose lines go to this run's log.txt (while ``run_logs`` holds it)."""
    return logging.getLogger(f"{__name__}.{run_dir.name}")


@contextmanager
def run_logs(run_dirs: list[Path]) -> Iterator[None]:
    """Each run's log.txt gets its own run's lines."""
    attached = []
    for d in run_dirs:
        handler = logging.FileHandler(d / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger = run_log(d)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        attached.append((logger, handler))
    try:
        yield
    finally:
        for logger, handler in attached:
            logger.removeHandler(handler)
            handler.close()


def mark_diverged(run_dir: Path, step: int, losses: dict[str, float]) -> RunDiverged:
    """Write the ``diverged`` marker; returns the error to raise."""
    write_json(run_dir / DIVERGED, {"step": step, "losses": losses})
    bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(v))
    return RunDiverged(f"training diverged: non-finite loss ({bad}) by step {step}; "
                       f"marked {run_dir / DIVERGED} (try a lower lr)")


@contextmanager
def open_run_dir(run_dir: Path, args: RunArgs) -> Iterator[None]:
    """Create (or reuse) the dir of this run and hold it: claim, identity, no stale leftovers."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run dir {run_dir}: {exc.strerror or exc}") from None
    with claimed(run_dir):
        check_identity(run_dir, args)
        remove_stale_temps(run_dir)
        if not (run_dir / DONE).exists():
            (run_dir / DIVERGED).unlink(missing_ok=True)  # a retry: the old verdict is stale
        yield


# -- checkpoints -----------------------------------------------------------------------------
def _fault(exc: BaseException) -> str:
    """The informative line of torch.load's (long) error."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Check the documentation", "Please file an issue"))]
    line = lines[-1] if lines else type(exc).__name__
    return line.split(". ")[0].rstrip(".")


#: a checkpoint file is torch.save's bytes, then this mark and their SHA-256: torch's zip reader
#: checks no CRC, so bytes damaged inside a tensor would otherwise load as silently wrong weights
SEAL = b"domainbed_sc-sha256:"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, lambda f: f.write(payload + SEAL + hashlib.sha256(payload).digest()))


def _unseal(blob: bytes) -> bytes:
    """The torch.save payload of a checkpoint file; files written before the seal pass as is."""
    payload, mark, digest = blob[:-52], blob[-52:-32], blob[-32:]
    if mark != SEAL:
        return blob
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch: the file was damaged after it was written")
    return payload


def load_checkpoint(path: Path, device: torch.device, log: logging.Logger) -> dict[str, Any] | None:
    """The checkpoint's state, or None (after moving it aside) if it cannot be read or fails its
    checksum.  A pickle that would create objects other than tensors and plain types is refused
    with a UserError."""
    if not path.exists():
        return None
    try:
        return torch.load(io.BytesIO(_unseal(path.read_bytes())), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch reports a bad file through many types
        if "unsupported global" in str(exc).lower():  # a pickle that would call a function
            aside = set_aside(path)
            raise UserError(f"refusing checkpoint {path}: it would run code ({_fault(exc)}); "
                            f"moved to {aside.name}") from None
        restart_from_scratch(path, f"unreadable checkpoint {path} ({_fault(exc)})", log)
        return None


def set_aside(path: Path) -> Path:
    """Rename a bad file out of the way (never delete what may be evidence)."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    return aside


def restart_from_scratch(path: Path, why: str, log: logging.Logger) -> None:
    message = f"{why}: moved to {set_aside(path).name}, restarting from scratch"
    log.warning(message)
    print(f"domainbed-sc: warning: {message}", file=sys.stderr, flush=True)
