"""Holding a fetch-once lock (mirror/keylocks.py) as another process on this host would."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator

from django.db import connection

from mirror import keylocks


@contextlib.contextmanager
def held_elsewhere(key: str) -> Iterator[Callable[[], None]]:
    """Hold the lock on `key` through an open file description of the lock file of our own,
    as another process does (SQLite test databases); yields a `release()` callable, which the
    end of the block calls too if nobody did."""
    assert connection.vendor == "sqlite", "PostgreSQL locks are held by sessions, not files"
    fd = os.open(keylocks._lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    name = keylocks._name(key)
    assert keylocks._file_lock(fd, name, fcntl.F_WRLCK)
    once = threading.Lock()

    def release() -> None:
        if once.acquire(blocking=False):
            os.close(fd)  # the kernel drops the lock with its last descriptor

    try:
        yield release
    finally:
        release()
