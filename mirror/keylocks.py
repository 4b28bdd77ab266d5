"""Fetch-once locks: at most one holder of a key across threads, processes and instances.

mirror/singleflight.py takes one before it asks the upstream for a small thing (a Go `.info`,
a manifest, a tag), and mirror/fill.py before it fills an object. A holder that dies lets
go: at once on SQLite, after a lease period on PostgreSQL.

- SQLite (one host by nature, and the default): an open-file-description lock on one byte of
  a lock file beside the database, at an offset named by a 64-bit hash of the key. No
  database write: as lease rows, these locks took three writes per miss (claim, release, and
  the takeover of an expired one), which serialized every process's misses on SQLite and cost
  a third of a cold `go mod download` through the mirror. The kernel drops a lock when its
  holder exits, killed or not.
- PostgreSQL (instances on several hosts): a lease row (mirror/leases.py) named by the key,
  expiring after MIRROR_FILL_LEASE_SECONDS. Not an advisory lock: those belong to a database
  session, which a pooler in transaction mode (PgBouncer, as `manage.py check` suggests) does
  not keep from one statement to the next.

Non-blocking: `acquire` answers at once, and a caller that does not get the lock polls.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from . import leases
from .models import FillLease

_OFFSETS = 1 << 62  # byte offsets of the SQLite lock file: far apart, no collision in practice


@dataclass(frozen=True)
class Held:
    """A lock held on a key (`name`: its 64-bit hash; `lease`: its row, on PostgreSQL)."""

    name: int
    lease: FillLease | None = None


def _name(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def acquire(key: str) -> Held | None:
    """Take the lock on `key`, or None when another holder has it (in this process too).
    Raises a database or OS error when the locks cannot be reached."""
    name = _name(key)
    with _here_mutex:  # a file lock is the process's: its threads are told apart here
        if name in _held_here:
            return None
        _held_here.add(name)
    held = None
    try:
        if connection.vendor == "sqlite":
            held = Held(name) if _file_lock(_lock_file.fd(), name, fcntl.F_WRLCK) else None
        elif (lease := leases.claim(_lease_key(key))) is not None:
            held = Held(name, lease)
    finally:
        if held is None:
            with _here_mutex:
                _held_here.discard(name)
    return held


def release(held: Held) -> None:
    try:
        if held.lease is not None:
            leases.release(held.lease)
        else:
            _file_lock(_lock_file.fd(), held.name, fcntl.F_UNLCK)
    finally:
        with _here_mutex:
            _held_here.discard(held.name)


def _lease_key(key: str) -> str:
    """Lease keys are at most 512 characters: long keys are named by their hash."""
    key = f"once:{key}"
    return key if len(key) <= 200 else f"once:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _file_lock(fd: int, name: int, kind: int) -> bool:
    """Set (F_WRLCK) or clear (F_UNLCK) the lock of `fd`'s open file description on the byte
    of `name`; False when another open file description holds it."""
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks).
    request = struct.pack("hhqqi4x", kind, os.SEEK_SET, name % _OFFSETS, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held elsewhere
        return False
    return True


class _LockFile:
    """The lock file, opened once per process."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._mutex = threading.Lock()

    def fd(self) -> int:
        with self._mutex:
            if self._fd is None:
                self._fd = os.open(_lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            return self._fd


def _lock_path() -> Path:
    """Beside the SQLite database file (all that share it share the locks); in the data
    folder for an in-memory database."""
    name = str(connection.settings_dict["NAME"])
    if name.startswith("file:") or name == ":memory:":
        return Path(settings.DATA_DIR) / "fetch-once.locks"
    return Path(name + ".locks")


_lock_file = _LockFile()
_held_here: set[int] = set()
_here_mutex = threading.Lock()


def _after_fork() -> None:
    """A forked child holds none of its parent's locks: it must neither share the parent's
    open file description (and with it the parent's locks) nor believe it holds them."""
    global _lock_file, _held_here, _here_mutex
    _lock_file, _held_here, _here_mutex = _LockFile(), set(), threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
