"""One fill in this process: the upstream copy, its limits, its end, and its local readers.

A fill is opened by the request that missed (`Fill.open`: the upstream answer, the verifier,
the storage writer, the published lease), then copied by a thread of its own that hashes each
chunk, appends it to the writer and wakes the readers; it commits only if the verifier
accepts the whole body. Readers (`LocalFollower`) read the spool file as it grows, so a client
that leaves stops nothing, until no client has read for MIRROR_FILL_ABANDON_SECONDS.
"""

from __future__ import annotations

import contextlib
import errno
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
from .content import Content, LocalFollower, Source, StoredContent, Verifier
from .content import wait_seconds as _wait_seconds
from .errors import DigestMismatch, MirrorError, StorageFull, UpstreamInvalid, UpstreamUnavailable
from .models import FillLease, StoredObject
from .storage import Storage, Writer

log = logging.getLogger(__name__)

# Arriving bytes are written (and readers woken) in batches of this size, or after this long:
# writing and waking per network read (64 KiB) costs several times more (measured: 64 KiB
# writes reach 0.5 GB/s on ext4 here, 1 MiB writes 4 GB/s). The first bytes go at once.
WRITE_BYTES = 1024 * 1024
WRITE_SECONDS = 0.02
RECENT_BLOCKS = 8


def spool_dir() -> Path:
    """Where fills keep a local copy for followers when storage has none (S3)."""
    path = Path(settings.DATA_DIR) / "spool"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_spool() -> Path:
    return spool_dir() / uuid.uuid4().hex


def sweep_spools(older_than: float) -> int:
    """Remove spool files that crashed fills left behind; return how many."""
    cutoff = time.time() - older_than
    removed = 0
    for entry in spool_dir().iterdir():
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
    return removed


def _as_error(e: BaseException, key: str) -> MirrorError:
    """What readers are told: the core's own errors as they are, a full disk as StorageFull,
    anything else (a database or network error) as the upstream being unavailable."""
    if isinstance(e, MirrorError):
        return e
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        log.error("storage full: the fill of %s stopped, nothing committed", key)
        return StorageFull(f"storage full while filling {key}")
    return UpstreamUnavailable(f"{type(e).__name__} during the fill of {key}")


def _best_effort(what: str, key: str, step: Callable[[], object]) -> None:
    """A cleanup step: its failure is logged and does not stop the steps after it."""
    try:
        step()
    except Exception:
        log.warning("fill of %s: could not %s", key, what, exc_info=True)


class Fill:
    """One fill in this process: the background copy and the state readers wait on.

    Ownership. The fill's end (`_end`) runs exactly once, from the thread that holds the fill
    at that moment: the request thread in `open()` until the copy thread has started, the copy
    thread after. `_end` first has the in-process registry forget the fill and free its slot
    (`on_end`; a request from then on starts afresh), then, in a `finally`, sets the outcome
    (`done` or `failed`) and wakes every reader; the cleanup steps follow, each best-effort and
    logged so that none stops the others: release the lease, abort the storage write, close
    and remove the separate spool, close the upstream body. The fill owns the upstream body,
    the storage writer, the separate spool file (backends without a local temporary) and the
    lease. It owns no reader's file descriptor: each `LocalFollower` opens the spool when its
    client starts reading and closes it after.
    """

    def __init__(
        self,
        key: str,
        lease: FillLease,
        storage: Storage,
        *,
        max_size: int,
        upstream_id: int | None,
        on_end: Callable[[Fill], None],
    ) -> None:
        self.key, self.lease, self.storage = key, lease, storage
        self.max_size = max_size  # 0: no limit beyond the upstream's Content-Length
        self.upstream_id = upstream_id
        self._on_end = on_end
        self.cond = threading.Condition()
        self.state = "connecting"  # -> streaming -> verified -> done | failed
        # Every byte checked: readers may read all that was written, even should the commit
        # fail after (the bytes are right; only the cache goes without them).
        self.verified = False
        self.error: MirrorError | None = None
        self.written = 0
        self.size: int | None = None
        # Readers reading now, and since when none has (the abandon budget).
        self.readers = 0
        self.idle_since = time.monotonic()
        # The last blocks written, as (offset, bytes): readers keeping up take them from here
        # instead of reading the spool back (one copy less per byte).
        self.recent: deque[tuple[int, bytes]] = deque(maxlen=RECENT_BLOCKS)
        self.verifier: Verifier | None = None
        self.writer: Writer | None = None
        self.spool: Path | None = None
        self._spool_file: BinaryIO | None = None

    def open(self, fetch: Callable[[], Source], verifier: Callable[[], Verifier]) -> None:
        """Open the upstream and start the copy thread. On failure the fill has ended (its
        readers woken with the error) and that error is raised."""
        source: Source | None = None
        try:
            source = fetch()
            self.verifier = verifier()
            if self.max_size and source.size is not None and source.size > self.max_size:
                raise UpstreamInvalid(
                    f"{self.key}: {source.size} bytes, over the limit of {self.max_size}"
                )
            self.size = source.size
            self.writer = self.storage.writer(self.key)
            self.spool = self.writer.spool_path
            if self.spool is None:
                self.spool = new_spool()
                self._spool_file = open(self.spool, "xb")  # noqa: SIM115 - closed in _end
            leases.publish(self.lease, str(self.spool), source.size)
            with self.cond:
                self.state = "streaming"
                self.cond.notify_all()
            threading.Thread(
                target=self._copy, args=(source,), name=f"fill {self.key[:40]}", daemon=True
            ).start()
        except BaseException as e:
            error = _as_error(e, self.key)
            self._end(source, error)
            if error is e or not isinstance(e, Exception):
                raise
            raise error from e

    def _copy(self, source: Source) -> None:
        error: MirrorError | None = None
        try:
            self._stream(source)
            self._commit()
        except BaseException as e:
            error = _as_error(e, self.key)
            log.warning("fill of %s failed: %s", self.key, error)
        finally:
            self._end(source, error)
            _best_effort("close its database connection", self.key, connection.close)

    def _stream(self, source: Source) -> None:
        """Copy the upstream body to the writer, within the limits, then verify it."""
        assert self.writer is not None and self.spool is not None and self.verifier is not None
        limit = min(n for n in (self.size, self.max_size or None, 1 << 62) if n is not None)
        abandon = settings.MIRROR_FILL_ABANDON_SECONDS
        renew_every = settings.MIRROR_FILL_LEASE_SECONDS / 3
        renewed = written_at = time.monotonic()
        received = pending_size = 0
        pending: list[bytes] = []
        for chunk in source.chunks:
            received += len(chunk)
            if received > limit:
                raise self._too_big(received)
            self.verifier.update(chunk)
            pending.append(chunk)
            pending_size += len(chunk)
            now = time.monotonic()
            if pending_size >= WRITE_BYTES or now - written_at >= WRITE_SECONDS or not self.written:
                self._append(pending)
                pending_size = 0
                written_at = now
            if now - renewed > renew_every:
                if not leases.renew(self.lease):
                    raise UpstreamUnavailable("fill lease lost")
                renewed = now
            if not self.readers and now - self.idle_since > abandon:
                raise UpstreamUnavailable(f"{self.key}: no client read it for {abandon:g} s")
        self._append(pending)
        if self.size is not None and self.written != self.size:
            raise DigestMismatch(f"{self.key}: got {self.written} bytes of {self.size}")
        self.verifier.verify(self.written, self.spool)

    def _too_big(self, received: int) -> MirrorError:
        if self.size is not None and received > self.size:
            return DigestMismatch(f"{self.key}: more than the {self.size} bytes announced")
        return UpstreamInvalid(f"{self.key}: larger than the limit of {self.max_size} bytes")

    def _commit(self) -> None:
        assert self.writer is not None
        with self.cond:  # readers may have the last byte now; the commit (fsync) follows
            self.state, self.verified = "verified", True
            self.cond.notify_all()
        self.writer.commit()
        # The index row is for the admin and statistics; the object is served by its key.
        _best_effort(
            "index the stored object",
            self.key,
            lambda: StoredObject.objects.update_or_create(
                key=self.key, defaults={"size": self.written, "upstream_id": self.upstream_id}
            ),
        )

    def _append(self, pending: list[bytes]) -> None:
        """Write the pending chunks where readers find them, then wake the readers."""
        if not pending:
            return
        data = b"".join(pending)
        pending.clear()
        assert self.writer is not None
        self.writer.write(data)
        if self._spool_file:
            self._spool_file.write(data)
            self._spool_file.flush()
        with self.cond:
            self.recent.append((self.written, data))
            self.written += len(data)
            self.cond.notify_all()

    def _end(self, source: Source | None, error: MirrorError | None) -> None:
        """The fill's end: see the class docstring."""
        try:
            self._on_end(self)
        finally:
            with self.cond:  # memory only: readers learn the outcome before any slow cleanup
                self.state, self.error = ("failed", error) if error else ("done", None)
                if error is None:
                    self.size = self.written
                self.cond.notify_all()
        # Best-effort from here on, the lease first: whoever waits for it may fill at once.
        _best_effort("release the lease", self.key, lambda: leases.release(self.lease))
        if error is not None and self.writer is not None:
            _best_effort("abort the storage write", self.key, self.writer.abort)
        if self._spool_file is not None:
            _best_effort("close the spool", self.key, self._spool_file.close)
            assert self.spool is not None
            _best_effort("remove the spool", self.key, self.spool.unlink)
        if source is not None:
            _best_effort("close the upstream body", self.key, source.close)

    def reader(self) -> Content:
        """A reader of this fill (waiting for the upstream's answer first, within bounds)."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.state != "connecting", _wait_seconds()):
                raise UpstreamUnavailable(f"timed out waiting for the upstream of {self.key}")
            if self.state == "failed":
                assert self.error is not None
                raise self.error
            if self.state != "done":
                assert self.spool is not None
                return LocalFollower(self, str(self.spool))
        return StoredContent(self.storage, self.key, self.written, cache="MISS")
