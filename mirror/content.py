"""What a reader gets: committed content, or the spool of a fill in progress.

`Content` is the protocol apps' view of an object; `SpoolReader` reads a spool file as it
grows, up to what `readable_limit` allows before the object is verified; `LocalFollower`
reads a fill of this process (mirror/filler.py), `RemoteFollower` tails the spool of a
filler in another process on this host (see mirror/fill.py).

File descriptors: a reader of a fill in progress opens the spool only when its client starts
reading (the first item of `open()`'s iterator), and closes it when that iterator ends or is
closed; an answer that never reads (a 416, a client gone before the first byte) holds none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from django.conf import settings

from . import leases
from .errors import MirrorError, ServiceUnavailable, UpstreamUnavailable
from .models import FillLease
from .storage import ObjectNotFound, Storage

if TYPE_CHECKING:
    from .filler import Fill

CHUNK = 1024 * 1024
POLL = 0.05
HOLDBACK = 64 * 1024

log = logging.getLogger(__name__)


def wait_seconds() -> float:
    """How long any wait on a fill lasts without progress: two lease periods. A live filler
    renews its lease every third of a period while bytes arrive, so that long without a byte
    means the upstream or the filler is stuck (its own upstream timeouts end it first)."""
    return settings.MIRROR_FILL_LEASE_SECONDS * 2


def readable_limit(written: int, end: int | None, verified: bool, size: int | None = None) -> int:
    """How far a reader may read now: before verification, never the object's last HOLDBACK
    bytes nor the last byte of the requested range. With the size known (the fill refuses a
    longer body), everything before the last HOLDBACK bytes is readable as it arrives, so a
    reader keeping up takes whole blocks; else the last HOLDBACK bytes received are held."""
    if verified:
        return written if end is None else min(written, end)
    limit = written - HOLDBACK if size is None else min(written, size - HOLDBACK)
    return limit if end is None else min(limit, end - 1)


@dataclass
class Source:
    """An upstream body, opened (status and headers checked) but not yet read: by
    `readinto(view) -> bytes read, 0 at the end` into the fill's buffer where the body
    allows it (mirror/http.py's RawBody), else as `chunks`."""

    size: int | None
    chunks: Iterator[bytes]
    close: Callable[[], None]
    readinto: Callable[[memoryview], int] | None = None

    def reader(self) -> Callable[[memoryview], int]:
        """The body's `readinto`: the source's own, else one over its chunks."""
        return self.readinto or _ChunkReader(self.chunks).readinto


class _ChunkReader:
    """`readinto` over an iterator of chunks (bodies that cannot be read into a buffer)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = memoryview(b"")

    def readinto(self, view: memoryview) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = memoryview(chunk)
        n = min(len(view), len(self._left))
        view[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class Verifier(Protocol):
    """Checks a body as it streams (`update`), then as a whole (`verify`, given the local
    file holding every byte, for checks that need random access such as a zip's directory);
    `verify` raises DigestMismatch or InvalidContent."""

    def update(self, chunk: bytes) -> None: ...

    def verify(self, size: int, path: Path) -> None: ...


class Content:
    """Bytes of one object, committed or on their way. `size` is None only if unknown.

    `cache` is "MISS" for the request that filled the object and for the followers of that
    fill, "HIT" when the object was already committed."""

    cache = "HIT"
    size: int | None = None

    def open(self, start: int = 0, length: int | None = None) -> BinaryIO | Iterator[bytes]:
        """A file (committed local objects, for sendfile) or an iterator of chunks."""
        raise NotImplementedError

    def redirect_url(self) -> str | None:
        return None


class StoredContent(Content):
    """A committed object. `refill` (the fill path's `get` of the key) fetches it anew if it
    has left storage by the time it is opened."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        size: int,
        cache: str = "HIT",
        refill: Callable[[], Content] | None = None,
    ) -> None:
        self.storage, self.key, self.size, self.cache = storage, key, size, cache
        self.refill = refill

    def open(self, start: int = 0, length: int | None = None) -> BinaryIO | Iterator[bytes]:
        try:
            return self.storage.open(self.key, start, length)
        except ObjectNotFound:
            # Evicted or purged since the look in storage (by another process, while this
            # one still knew the object's size: mirror/storage/s3.py): fetched anew, once.
            # Eviction spares what was pulled within MIRROR_EVICT_GRACE_SECONDS: rare.
            if self.refill is None:
                raise ServiceUnavailable(f"{self.key} left the cache as it was asked", 1) from None
        content = self.refill()
        if isinstance(content, StoredContent):
            content.refill = None
        if content.size != self.size:  # the answer's Content-Length is this size
            raise ServiceUnavailable(f"{self.key} left the cache as it was asked", 1)
        self.cache = content.cache
        return content.open(start, length)

    def redirect_url(self) -> str | None:
        return self.storage.presigned_url(self.key) if settings.MIRROR_S3_REDIRECT else None


class MemoryContent(Content):
    """A small committed object, served from memory: fetched, verified and committed in the
    request (the short path of mirror/filler.py, MISS), or read from storage (HIT, fill.get's
    `in_memory`)."""

    def __init__(self, data: bytes, cache: str = "MISS") -> None:
        self.data, self.size, self.cache = data, len(data), cache

    def open(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        end = self.size if length is None else start + length
        yield self.data[start:end]


def read_chunks(stream: BinaryIO, length: int | None) -> Iterator[bytes]:
    """Read a stream in chunks, at most `length` bytes; close it at the end."""
    remaining = length
    try:
        while remaining is None or remaining > 0:
            data = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not data:
                return
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        stream.close()


class SpoolReader(Content):
    """Reads a growing spool file; subclasses say how much of it may be read.

    Owns one file descriptor, opened at the first read and closed when the iterator ends.
    A spool gone before that (the fill committed, or failed, just now) is not an error in
    itself: the reader then serves the committed object, or the fill's error."""

    cache = "MISS"

    def __init__(self, storage: Storage, key: str, path: str, size: int | None) -> None:
        self.storage, self.key, self.size = storage, key, size
        self._path = path
        self._fd: int | None = None

    def _readable(self, pos: int, end: int | None) -> int:
        """Block until bytes past `pos` may be read; return the limit, or `pos` at the end."""
        raise NotImplementedError

    def _failure(self) -> MirrorError:
        """The error to raise when the spool is gone and nothing was committed."""
        return UpstreamUnavailable(f"the fill of {self.key} failed")

    def _attach(self) -> None:
        """The client starts reading (for fills that count their readers)."""

    def _detach(self) -> None:
        """The client stopped reading, at the end or not."""

    def open(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self._iterate(start, None if length is None else start + length)

    def _read(self, pos: int, size: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDONLY)
        return os.pread(self._fd, size, pos)

    def _iterate(self, pos: int, end: int | None) -> Iterator[bytes]:
        self._attach()
        try:
            while end is None or pos < end:
                try:
                    limit = self._readable(pos, end)
                    if limit <= pos:
                        return
                    data = self._read(pos, min(limit - pos, CHUNK))
                except FileNotFoundError:
                    yield from self._committed(pos, end)
                    return
                if not data:
                    raise UpstreamUnavailable("spool file shrank")
                pos += len(data)
                yield data
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._detach()

    def _committed(self, pos: int, end: int | None) -> Iterator[bytes]:
        """The rest from the committed object, once the spool is gone."""
        length = None if end is None else end - pos
        try:
            stream = self.storage.open(self.key, pos, length)
        except ObjectNotFound:
            raise self._failure() from None
        yield from read_chunks(stream, length)


class LocalFollower(SpoolReader):
    """A reader of a fill in this process: takes recent blocks from memory, else reads the
    spool; counts as one of the fill's readers while its client reads. Gives up
    (UpstreamUnavailable) when the fill shows no progress for `wait_seconds()`."""

    def __init__(self, fill: Fill, path: str) -> None:
        self.fill = fill
        super().__init__(fill.storage, fill.key, path, fill.size)

    def _failure(self) -> MirrorError:
        return self.fill.error or super()._failure()

    def _attach(self) -> None:
        with self.fill.cond:
            self.fill.readers += 1

    def _detach(self) -> None:
        with self.fill.cond:
            self.fill.readers -= 1
            if not self.fill.readers:
                self.fill.idle_since = time.monotonic()

    def _read(self, pos: int, size: int) -> bytes:
        with self.fill.cond:
            blocks = list(self.fill.recent)
        for start, block in reversed(blocks):
            if start <= pos < start + len(block):
                offset = pos - start
                if offset == 0 and size >= len(block):
                    return block
                return block[offset : offset + size]
        return super()._read(pos, size)

    def _readable(self, pos: int, end: int | None) -> int:
        fill = self.fill
        with fill.cond:
            seen, since = (fill.state, fill.written), time.monotonic()
            while True:
                done = fill.verified
                if fill.state == "failed" and not done:
                    assert fill.error is not None
                    raise fill.error
                limit = readable_limit(fill.written, end, done, fill.size)
                if limit > pos or done:
                    return limit
                now = time.monotonic()
                if (fill.state, fill.written) != seen:
                    seen, since = (fill.state, fill.written), now
                left = since + wait_seconds() - now
                if left <= 0:
                    raise UpstreamUnavailable(f"the fill of {self.key} stalled")
                fill.cond.wait(min(1.0, left))


class _FillerDied(Exception):
    """The filler a RemoteFollower tails died (its lease lapsed) before committing."""


class RemoteFollower(SpoolReader):
    """Tails the spool file of a filler in another process on this host.

    A filler's death is a follower's turn: when its lease lapses (expired, or taken over
    after expiring) with nothing committed, the reader asks `retake` for the object (which
    claims the fill, or follows whoever claimed it first) and goes on from the bytes its
    client already has, so the client still gets the whole body. A filler that ended and
    released its lease without committing failed: its readers get the error. Gives up
    (UpstreamUnavailable) when the spool has not grown for `wait_seconds()` while the
    filler's lease lives on."""

    def __init__(
        self,
        key: str,
        lease: FillLease,
        storage: Storage,
        retake: Callable[[], Content],
    ) -> None:
        self.lease = lease
        self._retake = retake
        self._done = False
        self._checked = time.monotonic()
        super().__init__(storage, key, lease.spool_path, lease.size)

    def _iterate(self, pos: int, end: int | None) -> Iterator[bytes]:
        try:
            with contextlib.closing(super()._iterate(pos, end)) as chunks:
                for data in chunks:
                    pos += len(data)
                    yield data
        except _FillerDied:
            log.warning("the filler of %s died: taking the fill over at byte %d", self.key, pos)
            yield from chunks_of(self._retake(), pos, end)

    def _readable(self, pos: int, end: int | None) -> int:
        size, grown = -1, time.monotonic()
        while True:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY)
            current = os.fstat(self._fd).st_size
            limit = readable_limit(current, end, self._done, self.size)
            if limit > pos or self._done:
                return limit
            now = time.monotonic()
            if current != size:
                size, grown = current, now
            elif now - grown > wait_seconds():
                raise UpstreamUnavailable(f"the fill of {self.key} stalled elsewhere")
            if now - self._checked > 0.5:
                self._checked = now
                holder = leases.holder(self.key)
                if holder != (self.lease.owner, True):
                    if self.storage.stat(self.key) is not None:
                        self._done = True
                        continue
                    if holder is None:  # released: the filler ended without committing
                        raise self._failure()
                    raise _FillerDied  # expired, or taken over (or a new fill since)
            time.sleep(POLL)


def chunks_of(content: Content, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The bytes of `content` from `start` up to `end` (or its end), from a file or a fill's
    reader; closing this generator closes either (a reader left early lets go of the fill,
    which goes on for others)."""
    length = None if end is None else end - start
    body = content.open(start, length)
    if hasattr(body, "read"):  # a file (files are iterators too: of lines)
        yield from read_chunks(body, length)
    else:
        yield from body
