"""What a reader gets: committed content, or the spool of a fill in progress.

`Content` is the protocol apps' view of an object; `SpoolReader` reads a spool file as it
grows, up to what `readable_limit` allows before the object is verified; `RemoteFollower`
tails the spool of a filler in another process on this host (see mirror/fill.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from django.conf import settings

from . import leases
from .errors import UpstreamUnavailable
from .models import FillLease
from .storage import Storage

CHUNK = 1024 * 1024
POLL = 0.05
HOLDBACK = 64 * 1024


def readable_limit(written: int, end: int | None, verified: bool) -> int:
    """How far a reader may read now: before verification, never the object's last HOLDBACK
    bytes nor the last byte of the requested range."""
    if verified:
        return written if end is None else min(written, end)
    limit = written - HOLDBACK
    return limit if end is None else min(limit, end - 1)


@dataclass
class Source:
    """An upstream body, opened (status and headers checked) but not yet read."""

    size: int | None
    chunks: Iterator[bytes]
    close: Callable[[], None]


class Verifier(Protocol):
    """Checks a body as it streams (`update`), then as a whole (`verify`, given the local
    file holding every byte, for checks that need random access such as a zip's directory);
    `verify` raises DigestMismatch or InvalidContent."""

    def update(self, chunk: bytes) -> None: ...

    def verify(self, size: int, path: Path) -> None: ...


class Content:
    """Bytes of one object, committed or on their way. `size` is None only if unknown."""

    cache = "HIT"
    size: int | None = None

    def open(self, start: int = 0, length: int | None = None) -> BinaryIO | Iterator[bytes]:
        """A file (committed local objects, for sendfile) or an iterator of chunks."""
        raise NotImplementedError

    def redirect_url(self) -> str | None:
        return None


class StoredContent(Content):
    def __init__(self, storage: Storage, key: str, size: int) -> None:
        self.storage, self.key, self.size = storage, key, size

    def open(self, start: int = 0, length: int | None = None) -> BinaryIO:
        return self.storage.open(self.key, start, length)

    def redirect_url(self) -> str | None:
        return self.storage.presigned_url(self.key) if settings.MIRROR_S3_REDIRECT else None


class SpoolReader(Content):
    """Reads a growing spool file; subclasses say how much of it may be read."""

    cache = "MISS"

    def __init__(self, path: str, size: int | None) -> None:
        self.size = size
        self._fd = os.open(path, os.O_RDONLY)

    def _readable(self, pos: int, end: int | None) -> int:
        """Block until bytes past `pos` may be read; return the limit, or `pos` at the end."""
        raise NotImplementedError

    def open(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self._iterate(start, None if length is None else start + length)

    def _read(self, pos: int, size: int) -> bytes:
        return os.pread(self._fd, size, pos)

    def _iterate(self, pos: int, end: int | None) -> Iterator[bytes]:
        try:
            while end is None or pos < end:
                limit = self._readable(pos, end)
                if limit <= pos:
                    return
                data = self._read(pos, min(limit - pos, CHUNK))
                if not data:
                    raise UpstreamUnavailable("spool file shrank")
                pos += len(data)
                yield data
        finally:
            os.close(self._fd)


class RemoteFollower(SpoolReader):
    """Tails the spool file of a filler in another process on this host."""

    def __init__(self, key: str, lease: FillLease, storage: Storage) -> None:
        self.key, self.lease, self.storage = key, lease, storage
        self._done = False
        self._checked = time.monotonic()
        super().__init__(lease.spool_path, lease.size)

    def _readable(self, pos: int, end: int | None) -> int:
        while True:
            limit = readable_limit(os.fstat(self._fd).st_size, end, self._done)
            if limit > pos or self._done:
                return limit
            if time.monotonic() - self._checked > 0.5:
                self._checked = time.monotonic()
                live = leases.current(self.key)
                if live is None or live.owner != self.lease.owner:
                    if self.storage.stat(self.key) is None:
                        raise UpstreamUnavailable(f"the fill of {self.key} failed elsewhere")
                    self._done = True
                    continue
            time.sleep(POLL)
