"""The fill path: every miss streams, verifies, commits atomically, and is fetched once.

`get()` returns a `Content` for a key: the committed object (HIT), or a view of a fill in
progress (MISS). A fill runs in a background thread that owns the upstream body: it hashes each
chunk, appends it to the storage writer, and wakes readers; it commits only if the verifier
accepts the whole body. Readers (the client that caused the fill and any followers) read the
bytes from the spool file as it grows, so a client that disconnects stops nothing, and a
follower costs no upstream request. The last HOLDBACK bytes (and the last byte of a range) are
held back from every reader until the object is verified: a client never sees a clean end of
a wrong body, and a small object that fails verification is a clean error answer.

Coordination: within a process, followers attach to the `Fill` object; across processes and
instances, a `FillLease` row elects one filler; followers on the same host tail its spool file,
others wait for the commit and read from storage. See ../shared/docs/fill-path.md.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import connection

from . import leases
from .content import (
    CHUNK,
    Content,
    RemoteFollower,
    Source,
    SpoolReader,
    StoredContent,
    Verifier,
    readable_limit,
)
from .errors import DigestMismatch, MirrorError, UpstreamUnavailable
from .models import FillLease, StoredObject
from .storage import Storage, Writer, get_storage

log = logging.getLogger(__name__)

# Arriving bytes are written (and readers woken) in batches of this size, or after this long:
# writing and waking per network read (64 KiB) costs several times more (measured: 64 KiB
# writes reach 0.5 GB/s on ext4 here, 1 MiB writes 4 GB/s). The first bytes go at once.
WRITE_BYTES = 1024 * 1024
WRITE_SECONDS = 0.02
RECENT_BLOCKS = 8

__all__ = ["CHUNK", "Content", "Source", "Verifier", "get", "stored", "sweep_spools"]


class Fill:
    """One fill in this process: the background copy and the state readers wait on."""

    def __init__(self, key: str, lease: FillLease, storage: Storage) -> None:
        self.key = key
        self.lease = lease
        self.storage = storage
        self.verifier: Verifier | None = None
        self.cond = threading.Condition()
        self.written = 0
        self.size: int | None = None
        self.state = "connecting"  # -> streaming -> verified -> done | failed
        self.error: MirrorError | None = None
        # The last blocks written, as (offset, bytes): readers keeping up take them from here
        # instead of reading the spool back (one copy less per byte).
        self.recent: deque[tuple[int, bytes]] = deque(maxlen=RECENT_BLOCKS)
        self.writer: Writer | None = None
        self.spool: Path | None = None
        self.upstream_id: int | None = None

    def start(self, source: Source) -> None:
        """Begin copying `source` in a background thread."""
        self.size = source.size
        self.writer = self.storage.writer(self.key)
        self.spool = self.writer.spool_path
        if self.spool is None:
            self.spool = _new_spool()
            self.spool.touch()
        leases.publish(self.lease, str(self.spool), source.size)
        with self.cond:
            self.state = "streaming"
            self.cond.notify_all()
        threading.Thread(
            target=self._run, args=(source,), name=f"fill {self.key[:40]}", daemon=True
        ).start()

    def fail(self, error: MirrorError) -> None:
        with self.cond:
            self.state, self.error = "failed", error
            self.cond.notify_all()

    def _run(self, source: Source) -> None:
        assert self.writer is not None and self.spool is not None and self.verifier is not None
        separate_spool = None
        if self.writer.spool_path is None:
            separate_spool = open(self.spool, "ab")  # noqa: SIM115 - closed below
        renew_every = settings.MIRROR_FILL_LEASE_SECONDS / 3
        renewed = written_at = time.monotonic()
        pending: list[bytes] = []
        pending_size = 0
        try:
            for chunk in source.chunks:
                self.verifier.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                now = time.monotonic()
                if (
                    pending_size >= WRITE_BYTES
                    or now - written_at >= WRITE_SECONDS
                    or not self.written
                ):
                    self._append(pending, separate_spool)
                    pending_size = 0
                    written_at = now
                if now - renewed > renew_every:
                    if not leases.renew(self.lease):
                        raise UpstreamUnavailable("fill lease lost")
                    renewed = now
            self._append(pending, separate_spool)
            if self.size is not None and self.written != self.size:
                raise DigestMismatch(f"{self.key}: got {self.written} bytes of {self.size}")
            self.verifier.verify(self.written, self.spool)
            with self.cond:  # readers may have the last byte now; the commit (fsync) follows
                self.state = "verified"
                self.cond.notify_all()
            self.writer.commit()
            StoredObject.objects.update_or_create(
                key=self.key, defaults={"size": self.written, "upstream_id": self.upstream_id}
            )
            with self.cond:
                self.state = "done"
                self.size = self.written
                self.cond.notify_all()
        except Exception as e:
            self.writer.abort()
            log.warning("fill of %s failed: %s", self.key, e)
            if not isinstance(e, MirrorError):
                e = UpstreamUnavailable(f"{type(e).__name__} while reading upstream")
            self.fail(e)
        finally:
            source.close()
            if separate_spool:
                separate_spool.close()
                self.spool.unlink(missing_ok=True)
            leases.release(self.lease)
            _forget(self)
            connection.close()

    def _append(self, pending: list[bytes], separate_spool: BinaryIO | None) -> None:
        """Write the pending chunks where readers find them, then wake the readers."""
        if not pending:
            return
        data = b"".join(pending)
        pending.clear()
        assert self.writer is not None
        self.writer.write(data)
        if separate_spool:
            separate_spool.write(data)
            separate_spool.flush()
        with self.cond:
            self.recent.append((self.written, data))
            self.written += len(data)
            self.cond.notify_all()

    def reader(self) -> Content:
        """Wait for the upstream's answer, then return a reader of this fill."""
        with self.cond:
            while self.state == "connecting":
                self.cond.wait()
            if self.state in ("streaming", "verified"):
                try:
                    return _LocalFollower(self, str(self.spool))
                except FileNotFoundError:
                    pass  # committed (renamed) or discarded just now
            while self.state in ("streaming", "verified"):
                self.cond.wait()
            if self.state == "failed":
                assert self.error is not None
                raise self.error
        content = stored(self.key)
        if content is None:
            raise UpstreamUnavailable(f"{self.key} vanished from storage right after its fill")
        return content


class _LocalFollower(SpoolReader):
    def __init__(self, fill: Fill, path: str) -> None:
        self.fill = fill
        super().__init__(path, fill.size)

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
            while True:
                if fill.state == "failed":
                    assert fill.error is not None
                    raise fill.error
                done = fill.state in ("verified", "done")
                limit = readable_limit(fill.written, end, done)
                if limit > pos or done:
                    return limit
                fill.cond.wait(1.0)


_fills: dict[str, Fill] = {}
_fills_lock = threading.Lock()


def _forget(fill: Fill) -> None:
    with _fills_lock:
        if _fills.get(fill.key) is fill:
            del _fills[fill.key]


def _spool_dir() -> Path:
    """Where fills keep a local copy for followers when storage has none (S3)."""
    path = Path(settings.DATA_DIR) / "spool"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _new_spool() -> Path:
    return _spool_dir() / uuid.uuid4().hex


def sweep_spools(older_than: float) -> int:
    """Remove spool files that crashed fills left behind; return how many."""
    cutoff = time.time() - older_than
    removed = 0
    for entry in _spool_dir().iterdir():
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
    return removed


def stored(key: str) -> Content | None:
    """The committed object, or None."""
    storage = get_storage()
    size = storage.stat(key)
    return None if size is None else StoredContent(storage, key, size)


def get(
    key: str,
    *,
    fetch: Callable[[], Source],
    verifier: Callable[[], Verifier],
    upstream_id: int | None = None,
) -> Content:
    """The object under `key`: from storage, from a fill in progress, or by starting a fill.

    Args:
        fetch: opens the upstream body; raises an UpstreamError before any byte is read.
        verifier: makes a fresh Verifier for the body (called only by the filler, once the
            upstream has answered; it may raise an UpstreamError or MirrorError, e.g. when the
            expected checksum cannot be looked up).
        upstream_id: recorded on the stored object's index row.

    Raises:
        UpstreamError: the upstream did not give us the object; nothing was stored.
    """
    storage = get_storage()
    deadline = time.monotonic() + settings.MIRROR_FILL_LEASE_SECONDS * 2
    while True:
        if (content := stored(key)) is not None:
            return content
        with _fills_lock:
            fill = _fills.get(key)
        if fill is not None:
            return fill.reader()
        lease = leases.claim(key)
        if lease is not None:
            return _start_fill(key, lease, storage, fetch, verifier, upstream_id)
        content = _follow_elsewhere(key, storage)
        if content is not None:
            return content
        if time.monotonic() > deadline:
            raise UpstreamUnavailable(f"timed out waiting for another fill of {key}")


def _start_fill(
    key: str,
    lease: FillLease,
    storage: Storage,
    fetch: Callable[[], Source],
    verifier: Callable[[], Verifier],
    upstream_id: int | None,
) -> Content:
    fill = Fill(key, lease, storage)
    fill.upstream_id = upstream_id
    with _fills_lock:
        _fills[key] = fill
    try:
        source = fetch()
        try:
            fill.verifier = verifier()
        except BaseException:
            source.close()
            raise
        fill.start(source)
    except BaseException as e:
        _forget(fill)
        leases.release(lease)
        fill.fail(e if isinstance(e, MirrorError) else UpstreamUnavailable(str(e)))
        raise
    return fill.reader()


def _follow_elsewhere(key: str, storage: Storage) -> Content | None:
    """Follow a fill owned by another process; None when it ended (look again)."""
    while (lease := leases.current(key)) is not None:
        if lease.spool_path and leases.is_local(lease):
            try:
                return RemoteFollower(key, lease, storage)
            except FileNotFoundError:
                return None  # it finished or failed just now
        time.sleep(0.1)  # connecting, or filling on another host: wait for the commit
    return None
