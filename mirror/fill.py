"""The fill path: every miss streams, verifies, commits atomically, and is fetched once.

`get()` returns a `Content` for a key: the committed object (HIT), or a view of a fill in
progress (MISS). The fill itself (the copy, its limits and its end) is `filler.Fill`; its
readers are in `content`. The last HOLDBACK bytes (and the last byte of a range)
are held back from every reader until the object is verified: a client never sees a clean end
of a wrong body, and a small object that fails verification is a clean error answer.

Coordination: within a process, followers attach to the `Fill` object, and at most
MIRROR_MAX_FILLS fills run at once (more wait MIRROR_FILL_QUEUE_SECONDS, then Overloaded);
across processes and instances, the key's fetch-once lock (mirror/keylocks.py: a file lock
on SQLite, a lease row on PostgreSQL) elects one filler. A small object is fetched, verified
and committed under that lock alone; a streamed one takes a `FillLease` row as well before
the lock is let go, naming its spool file and renewed while it streams. Followers elsewhere
poll: they find the object committed, or tail the spool when the fill is on their host;
followers on another host (no spool they can read) wait for the commit at most
`wait_seconds()` (two lease periods), then get UpstreamUnavailable with a Retry-After of one
lease period: a client retries rather than hangs on a long fill elsewhere.
See ../shared/docs/fill-path.md.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable

from django.conf import settings

from . import keylocks, leases
from .content import (
    CHUNK,
    POLL,
    Content,
    MemoryContent,
    RemoteFollower,
    Source,
    StoredContent,
    Verifier,
    chunks_of,
)
from .content import wait_seconds as _wait_seconds
from .errors import (
    DATABASE_DOWN,
    Overloaded,
    StorageFull,
    UpstreamUnavailable,
    database_unavailable,
)
from .filler import Fill, sweep_spools
from .memo import Memo
from .metrics import FILLS_IN_PROGRESS
from .storage import Storage, get_storage

log = logging.getLogger(__name__)

__all__ = ["CHUNK", "Content", "Source", "Verifier", "get", "stored", "sweep_spools"]


class _Fills:
    """The fills running in this process, and the slots that bound how many run at once.

    A slot is taken before taking the lock and given back when that fails or when the
    fill ends (`Fill`'s `on_end`); a fill in the registry always holds one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._fills: dict[str, Fill] = {}
        self._slots_taken = 0

    def find(self, key: str) -> Fill | None:
        with self._cond:
            return self._fills.get(key)

    def admit(self, key: str) -> Fill | None:
        """Take a slot (None), or return the fill of `key` that another thread of this
        process started meanwhile. Raises Overloaded after MIRROR_FILL_QUEUE_SECONDS."""
        queue = settings.MIRROR_FILL_QUEUE_SECONDS
        deadline = time.monotonic() + queue
        with self._cond:
            while True:
                if (fill := self._fills.get(key)) is not None:
                    return fill
                if self._slots_taken < settings.MIRROR_MAX_FILLS:
                    self._slots_taken += 1
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Overloaded(
                        f"{settings.MIRROR_MAX_FILLS} fills running; {key} waited {queue:g} s",
                        retry_after=max(1.0, queue),
                    )
                self._cond.wait(left)

    def give_back(self) -> None:
        with self._cond:
            self._slots_taken -= 1
            self._cond.notify_all()

    def add(self, fill: Fill) -> None:
        with self._cond:
            self._fills[fill.key] = fill
            self._cond.notify_all()
        FILLS_IN_PROGRESS.inc()

    def end(self, fill: Fill) -> None:
        """A fill ended: forget it and free its slot."""
        with self._cond:
            if self._fills.get(fill.key) is fill:
                del self._fills[fill.key]
            self._slots_taken -= 1
            self._cond.notify_all()
        FILLS_IN_PROGRESS.dec()


_fills = _Fills()

# The bodies of small committed objects this process answered from memory (`get`'s
# `in_memory`), by key, kept for MIRROR_UPSTREAM_CACHE_SECONDS: MEMO_BYTES in all.
MEMO_BYTES = 16 * 1024 * 1024
_bodies = Memo(MEMO_BYTES, sizeof=len)


def stored(key: str, refill: Callable[[], Content] | None = None) -> Content | None:
    """The committed object, or None; `refill` fetches it anew if it is gone when opened."""
    storage = get_storage()
    size = storage.stat(key)
    return None if size is None else StoredContent(storage, key, size, refill=refill)


def get(
    key: str,
    *,
    fetch: Callable[[], Source],
    verifier: Callable[[], Verifier],
    upstream_id: int | None = None,
    max_size: int | None = None,
    in_memory: int = 0,
) -> Content:
    """The object under `key`: from storage, from a fill in progress, or by starting a fill.

    Args:
        fetch: opens the upstream body; raises an UpstreamError before any byte is read.
        verifier: makes a fresh Verifier for the body (called only by the filler, once the
            upstream has answered; it may raise an UpstreamError or MirrorError, e.g. when the
            expected checksum cannot be looked up).
        upstream_id: recorded on the stored object's index row.
        max_size: the most bytes the object may have (0: no limit beyond the upstream's
            Content-Length); default settings.MIRROR_MAX_BLOB_BYTES. A larger body is
            refused as it streams (UpstreamInvalid), and nothing is stored.
        in_memory: a committed object of at most this many bytes comes as MemoryContent,
            whole (unless storage redirects clients): read once, then kept in this process
            for MIRROR_UPSTREAM_CACHE_SECONDS. Storage is still asked whether the object is
            there on every call (a stat), so that an object deleted is not answered.

    Raises:
        UpstreamError: the upstream did not give us the object; nothing was stored.
        Overloaded: MIRROR_MAX_FILLS fills were running for MIRROR_FILL_QUEUE_SECONDS.
        StorageFull: storage is below MIRROR_MIN_FREE_BYTES, or filled up during the fill.
        ServiceUnavailable: the database (leases) or the storage could not be reached.
    """
    storage = get_storage()
    if max_size is None:
        max_size = settings.MIRROR_MAX_BLOB_BYTES
    try:
        content = _get(key, storage, fetch, verifier, upstream_id, max_size)
    except DATABASE_DOWN as e:  # the leases' database is unreachable: 503, nothing filled
        raise database_unavailable(e) from e
    return _in_memory(content) if in_memory and (content.size or 0) <= in_memory else content


def _in_memory(content: Content) -> Content:
    """A committed `content` as MemoryContent, from the memo or read now (then kept); a
    fill in progress (or the fill's short path, already in memory) or an object that storage
    redirects clients to, as it is.

    Why: a warm 20 KB Go zip answered through a file cost ~60 us more CPU than the same
    bytes from memory (opening, reading and closing the file, the response's iterator)."""
    if not isinstance(content, StoredContent) or content.redirect_url():
        return content
    body = _bodies.get(content.key)
    if body is None or len(body) != content.size:
        with contextlib.closing(chunks_of(content, 0, content.size)) as chunks:
            body = b"".join(chunks)
        _bodies.put(content.key, body, settings.MIRROR_UPSTREAM_CACHE_SECONDS)
    return MemoryContent(body, content.cache)


def _get(
    key: str,
    storage: Storage,
    fetch: Callable[[], Source],
    verifier: Callable[[], Verifier],
    upstream_id: int | None,
    max_size: int,
) -> Content:
    give_up = time.monotonic() + _wait_seconds()
    # Asking again (claim the fill, or follow): what a follower of a filler that dies does,
    # and a hit whose object left storage before it was opened.
    retake = functools.partial(
        get, key, fetch=fetch, verifier=verifier, upstream_id=upstream_id, max_size=max_size
    )
    while True:
        if (content := stored(key, retake)) is not None:
            return content
        if (fill := _fills.find(key)) is not None:
            return fill.reader()
        if (fill := _fills.admit(key)) is not None:
            return fill.reader()
        held = _claim(key, storage)
        if isinstance(held, Content):
            return held
        if held is not None:
            return _start(key, held, storage, fetch, verifier, upstream_id, max_size)
        if (content := _follow_elsewhere(key, storage, give_up, retake)) is not None:
            return content
        if time.monotonic() > give_up:
            raise UpstreamUnavailable(f"timed out waiting for another fill of {key}")
        time.sleep(POLL)


def _claim(key: str, storage: Storage) -> keylocks.Held | Content | None:
    """With a slot taken: the fetch-once lock of `key` (the slot then belongs to the fill),
    or the object another filler committed just before we locked, or None (another filler is
    at work: one holding the lock, or one streaming under its lease). Anything but the lock
    gives the slot back (and the lock, if it was taken)."""
    held = None
    handed_over = False
    try:
        free = storage.free_bytes()
        if free is not None and free < settings.MIRROR_MIN_FREE_BYTES:
            log.error("storage full: %s bytes free, below MIRROR_MIN_FREE_BYTES", free)
            raise StorageFull(f"storage full: {free} bytes free")
        held = keylocks.acquire(lock_key(key))
        if held is None:
            return None
        # Another filler may have committed between our look at storage and our lock, or
        # be streaming under its lease (it let the lock go once it held the lease).
        if (content := stored(key)) is not None:
            return content
        if leases.current(key) is not None:
            return None
        handed_over = True
        return held
    finally:
        if not handed_over:
            _fills.give_back()
            if held is not None:
                try:
                    keylocks.release(held)
                except Exception:  # it ends with its session or process
                    log.warning("could not release the lock of %s", key, exc_info=True)


def lock_key(key: str) -> str:
    """The fetch-once lock of a fill of `key`."""
    return f"fill:{key}"


def _start(
    key: str,
    held: keylocks.Held,
    storage: Storage,
    fetch: Callable[[], Source],
    verifier: Callable[[], Verifier],
    upstream_id: int | None,
    max_size: int,
) -> Content:
    fill = Fill(key, storage, max_size=max_size, upstream_id=upstream_id, on_end=_fills.end)
    _fills.add(fill)
    fill.open(fetch, verifier, held)
    return fill.reader()


def _follow_elsewhere(
    key: str, storage: Storage, give_up: float, retake: Callable[[], Content]
) -> Content | None:
    """Follow a fill owned by another process: its spool when on this host, else wait for
    its end. None when it ended (look again); UpstreamUnavailable past `give_up`."""
    own = f"{leases.HOST}:{os.getpid()}:"
    while (lease := leases.current(key)) is not None:
        if (fill := _fills.find(key)) is not None:  # it was this process's after all
            return fill.reader()
        # A lease of this process with no fill behind it is a fill's end under way (or one
        # whose release failed): wait for it to go rather than follow a dead spool.
        followable = lease.spool_path and not lease.owner.startswith(own)
        if followable and leases.is_local(lease) and os.path.exists(lease.spool_path):
            return RemoteFollower(key, lease, storage, retake)
        if time.monotonic() > give_up:
            raise UpstreamUnavailable(
                f"another instance is still filling {key}",
                retry_after=settings.MIRROR_FILL_LEASE_SECONDS,
            )
        time.sleep(POLL)
    return None
