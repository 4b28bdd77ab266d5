"""One fill in this process: the upstream copy, its limits, its end, and its local readers.

A fill is opened by the request that missed, holding the key's fetch-once lock (`Fill.open`:
the upstream answer, the verifier, the storage writer, the lease naming its spool, then the
lock let go), then copied by a thread of its own that reads the body into a reused buffer,
hashes each block, hands it to the readers (in memory) and to a store thread that writes it to
storage; it commits only if the verifier accepts the whole body. Readers (`LocalFollower`)
take recent blocks from memory, older ones from the spool file, so a client that leaves stops
nothing, until no client has read for MIRROR_FILL_ABANDON_SECONDS. Storing runs beside the
upstream read, not in its way: a slow disk holds the upstream back only once UNSTORED_BYTES
wait for it. Storage without a local file of its own (S3) is fed from the spool by an upload
thread of its own, as the spool grows: its part uploads hold back neither the upstream read
nor the readers, who get the last bytes once the body is verified; the commit follows the last
part.

Small objects (a Content-Length under MIRROR_SMALL_OBJECT_BYTES) take a short path in the
request that missed: read into memory, verified, committed, then served from memory, under
the fetch-once lock alone: no thread, no spool, no lease of its own, one database write for
the commit (and none for the lock on SQLite).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import connection

from . import keylocks, leases, rows, stats
from .content import Content, LocalFollower, MemoryContent, Source, StoredContent, Verifier
from .content import wait_seconds as _wait_seconds
from .errors import (
    DATABASE_DOWN,
    DigestMismatch,
    MirrorError,
    StorageFull,
    UpstreamInvalid,
    UpstreamUnavailable,
    database_unavailable,
)
from .models import FillLease, StoredObject
from .storage import Storage, Writer

log = logging.getLogger(__name__)

# Arriving bytes are handed on (readers woken, storage fed) in blocks of this size, or after
# this long: waking and writing per network read (64 KiB) costs several times more. The
# first bytes go at once.
BLOCK = 1024 * 1024
WRITE_SECONDS = 0.02
# Blocks kept in memory once stored, for readers that keep up (one copy less per byte).
RECENT_BLOCKS = 4
# Bytes handed on but not yet stored; beyond this the upstream read waits for storage.
UNSTORED_BYTES = 16 * 1024 * 1024


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
    a lost database as DatabaseUnavailable, anything else (a network error) as the upstream
    being unavailable."""
    if isinstance(e, MirrorError):
        return e
    if isinstance(e, DATABASE_DOWN):
        return database_unavailable(e)
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


def _write_or_put_off(what: str, key: str, write: Callable[[], object]) -> None:
    """A database write of a fill's end (its index row, its lease's release), best-effort
    like a cleanup step; but when the database is unreachable, the write is put off until it
    is back (mirror/stats.py), so that an object committed during an outage is indexed and
    its lease row goes. The broken connection is dropped for the next query to reopen."""
    try:
        write()
    except DATABASE_DOWN:
        log.warning("fill of %s: database unavailable; will %s once it is back", key, what)
        _best_effort("close its database connection", key, connection.close)
        stats.write_later(f"{what} of {key}", write)
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
    lease (a streamed fill's; `open` lets the fetch-once lock go before it returns). It owns
    no reader's file descriptor: each `LocalFollower` opens the spool when its client starts
    reading and closes it after.
    """

    def __init__(
        self,
        key: str,
        storage: Storage,
        *,
        max_size: int,
        upstream_id: int | None,
        on_end: Callable[[Fill], None],
    ) -> None:
        self.key, self.storage = key, storage
        self.lease: FillLease | None = None  # a streamed fill's
        self.max_size = max_size  # 0: no limit beyond the upstream's Content-Length
        self.upstream_id = upstream_id
        self._on_end = on_end
        self.cond = threading.Condition()
        self.state = "connecting"  # -> streaming -> verified -> done | failed
        # Every byte checked: readers may read all that was written, even should the commit
        # fail after (the bytes are right; only the cache goes without them).
        self.verified = False
        self.error: MirrorError | None = None
        self.written = 0  # bytes handed to readers (hashed; in memory or stored)
        self.stored = 0  # of which the storage writer has (or, for S3, the spool)
        self.uploaded = 0  # S3: of which the upload thread gave the storage writer
        self.size: int | None = None
        # Readers reading now, and since when none has (the abandon budget).
        self.readers = 0
        self.idle_since = time.monotonic()
        # Blocks as (offset, bytes), covering every byte not yet stored and RECENT_BLOCKS
        # more: readers keeping up take them from here instead of reading the spool back.
        self.recent: deque[tuple[int, bytes]] = deque()
        self.verifier: Verifier | None = None
        self.writer: Writer | None = None
        self.spool: Path | None = None
        self._spool_file: BinaryIO | None = None
        # The store thread's work (None: no more) and its failure, if any.
        self._blocks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._store_error: BaseException | None = None
        self._stored_all = False  # the store thread is done: `stored` is final
        # The upload thread's failure, and the copy's order to stop it (the fill failed).
        self._upload_error: BaseException | None = None
        self._stop_upload = False
        # The whole body of a small object (the short path), once verified.
        self.memory: bytes | None = None

    def open(
        self, fetch: Callable[[], Source], verifier: Callable[[], Verifier], held: keylocks.Held
    ) -> None:
        """Open the upstream and fill a small object, or take the lease and start the copy
        thread; let the fetch-once lock `held` go (in this thread: on PostgreSQL it is its
        session's). On failure the fill has ended (its readers woken with the error) and that
        error is raised."""
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
            if source.size is not None and source.size < settings.MIRROR_SMALL_OBJECT_BYTES:
                self._fill_in_memory(source)
                self._end(source, None)
                return
            self.spool = self.writer.spool_path
            if self.spool is None:
                self.spool = new_spool()
                self._spool_file = open(self.spool, "xb", buffering=0)  # noqa: SIM115 - closed in _end
            self.lease = leases.claim(self.key, str(self.spool), source.size)
            if self.lease is None:  # only a fill that lost the lock can hold it
                raise UpstreamUnavailable(
                    f"another fill of {self.key} started",
                    retry_after=settings.MIRROR_FILL_LEASE_SECONDS,
                )
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
        finally:
            _best_effort("release the fetch-once lock", self.key, lambda: keylocks.release(held))

    def _fill_in_memory(self, source: Source) -> None:
        """The short path: the whole body read in this thread, verified, committed."""
        assert self.writer is not None and self.verifier is not None and self.size is not None
        buffer = bytearray(self.size + 1)  # one byte more: a longer body shows
        view, readinto, got = memoryview(buffer), source.reader(), 0
        while got < len(buffer) and (n := readinto(view[got:])):
            got += n
        if got != self.size:
            raise DigestMismatch(f"{self.key}: got {got} bytes of {self.size}")
        data = bytes(view[:got])
        self.verifier.update(data)
        self.writer.write(data)
        with _path_of(self.writer, data) as path:
            self.verifier.verify(got, path)
        self.writer.commit()
        self._index(got)
        self.memory, self.written, self.verified = data, got, True

    def _copy(self, source: Source) -> None:
        error: MirrorError | None = None
        store = threading.Thread(target=self._store, name=f"store {self.key[:40]}", daemon=True)
        store.start()
        upload = None
        if self._spool_file is not None:  # the writer has no local file: fed from the spool
            upload = threading.Thread(
                target=self._upload, name=f"upload {self.key[:40]}", daemon=True
            )
            upload.start()
        try:
            try:
                self._stream(source)
            finally:
                self._blocks.put(None)
                store.join()
            if self._store_error is not None:
                raise self._store_error
            self._verify()
            self._commit(upload)
        except BaseException as e:
            error = _as_error(e, self.key)
            log.warning("fill of %s failed: %s", self.key, error)
        finally:
            if upload is not None:  # before the writer is aborted: it may be uploading a part
                with self.cond:
                    self._stop_upload = True
                    self.cond.notify_all()
                upload.join()
            self._end(source, error)
            _best_effort("close its database connection", self.key, connection.close)

    def _stream(self, source: Source) -> None:
        """Read the upstream body into blocks, within the limits, and hand them on."""
        limit = min(n for n in (self.size, self.max_size or None, 1 << 62) if n is not None)
        abandon = settings.MIRROR_FILL_ABANDON_SECONDS
        renew_every = settings.MIRROR_FILL_LEASE_SECONDS / 3
        renewed = handed_at = time.monotonic()
        readinto = source.reader()
        buffer = memoryview(bytearray(BLOCK))
        filled = received = 0
        while n := readinto(buffer[filled:]):
            filled += n
            received += n
            if received > limit:
                raise self._too_big(received)
            now = time.monotonic()
            if filled == BLOCK or now - handed_at >= WRITE_SECONDS or not self.written:
                self._hand_on(bytes(buffer[:filled]))
                filled, handed_at = 0, now
            if now - renewed > renew_every:
                self._renew()
                renewed = now
            if not self.readers and now - self.idle_since > abandon:
                raise UpstreamUnavailable(f"{self.key}: no client read it for {abandon:g} s")
        if filled:
            self._hand_on(bytes(buffer[:filled]))
        if self.size is not None and self.written != self.size:
            raise DigestMismatch(f"{self.key}: got {self.written} bytes of {self.size}")

    def _renew(self) -> None:
        """Renew the lease; raise if another filler took it over. While the database is
        unreachable the copy goes on (its bytes go to storage, not the database) and the
        renewal is tried again a third of a lease period later: a short outage costs no
        fill, a long one ends it when its lease turns out taken over."""
        assert self.lease is not None  # a streamed fill holds one
        try:
            if not leases.renew(self.lease):
                raise UpstreamUnavailable("fill lease lost")
        except DATABASE_DOWN as e:
            log.warning("fill of %s: lease not renewed, database unavailable: %s", self.key, e)
            _best_effort("close its database connection", self.key, connection.close)

    def _too_big(self, received: int) -> MirrorError:
        if self.size is not None and received > self.size:
            return DigestMismatch(f"{self.key}: more than the {self.size} bytes announced")
        return UpstreamInvalid(f"{self.key}: larger than the limit of {self.max_size} bytes")

    def _hand_on(self, block: bytes) -> None:
        """Hash a block, give it to the readers and to the store thread; wait first while
        UNSTORED_BYTES are waiting for storage."""
        assert self.verifier is not None
        self.verifier.update(block)
        with self.cond:
            if not self.cond.wait_for(
                lambda: self.written - self.stored < UNSTORED_BYTES, _wait_seconds()
            ):
                raise UpstreamUnavailable(f"{self.key}: storage stalled")
            if self._store_error is not None:
                raise self._store_error
            self.recent.append((self.written, block))
            self.written += len(block)
            self.cond.notify_all()
        self._blocks.put(block)

    def _store(self) -> None:
        """The store thread: write each block to storage (for S3, to the spool, which the
        upload thread sends on), in order, until told there are no more; after a failure only
        count them (the fill then fails)."""
        assert self.writer is not None
        while (block := self._blocks.get()) is not None:
            if self._store_error is None:
                try:
                    if self._spool_file is None:
                        self.writer.write(block)
                    else:
                        _write_all(self._spool_file, block)
                except BaseException as e:
                    self._store_error = e
            with self.cond:
                self.stored += len(block)
                while len(self.recent) > RECENT_BLOCKS:
                    start, first = self.recent[0]
                    if start + len(first) > self.stored:
                        break
                    self.recent.popleft()
                self.cond.notify_all()
        with self.cond:
            self._stored_all = True
            self.cond.notify_all()

    def _upload(self) -> None:
        """The upload thread (storage without a local file): give the storage writer the
        spool's bytes as they are stored there, until all are (or the copy says stop)."""
        assert self.writer is not None and self.spool is not None
        try:
            with open(self.spool, "rb", buffering=0) as spool:
                while True:
                    with self.cond:
                        self.cond.wait_for(
                            lambda: (
                                self.stored > self.uploaded or self._stored_all or self._stop_upload
                            )
                        )
                        if self._stop_upload:
                            return
                        end, last = self.stored, self._stored_all
                    while self.uploaded < end:
                        size = min(BLOCK, end - self.uploaded)
                        data = os.pread(spool.fileno(), size, self.uploaded)
                        if not data:
                            raise OSError(errno.EIO, "the spool is shorter than stored")
                        self.writer.write(data)
                        with self.cond:
                            self.uploaded += len(data)
                            self.cond.notify_all()
                    if last:
                        return
        except BaseException as e:
            with self.cond:
                self._upload_error = e
                self.cond.notify_all()

    def _uploaded(self) -> None:
        """Wait until the upload thread gave the writer every byte, renewing the lease the
        while; its failure is raised, and so is a stall of `wait_seconds()`."""
        renew_every = settings.MIRROR_FILL_LEASE_SECONDS / 3
        seen, since = -1, time.monotonic()
        while True:
            with self.cond:
                self.cond.wait_for(
                    lambda: self.uploaded >= self.written or self._upload_error is not None,
                    renew_every,
                )
                if self._upload_error is not None:
                    raise self._upload_error
                if self.uploaded >= self.written:
                    return
                uploaded = self.uploaded
            now = time.monotonic()
            if uploaded != seen:
                seen, since = uploaded, now
            elif now - since > _wait_seconds():
                raise UpstreamUnavailable(f"{self.key}: storage stalled")
            self._renew()

    def _verify(self) -> None:
        assert self.verifier is not None and self.spool is not None
        self.verifier.verify(self.written, self.spool)

    def _commit(self, upload: threading.Thread | None) -> None:
        assert self.writer is not None
        with self.cond:  # readers may have the last byte now; storing and the commit follow
            self.state, self.verified = "verified", True
            self.cond.notify_all()
        if upload is not None:
            self._uploaded()
            upload.join()
        self.writer.commit()
        self._index(self.written)

    def _index(self, size: int) -> None:
        """The index row is for the admin and statistics; the object is served by its key.
        (The write holds no reference to the fill: put off, it keeps no bytes alive.)"""
        key, upstream_id = self.key, self.upstream_id

        def write() -> None:
            rows.insert(
                StoredObject,
                {"key": key, "size": size, "upstream_id": upstream_id},
                conflict=("key",),
                update=("size", "upstream"),
            )

        _write_or_put_off("index the stored object", key, write)

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
        if (lease := self.lease) is not None:
            _write_or_put_off("release the lease", self.key, lambda: leases.release(lease))
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
            if self.memory is not None:
                return MemoryContent(self.memory)
            if self.state != "done":
                assert self.spool is not None
                return LocalFollower(self, str(self.spool))
        return StoredContent(self.storage, self.key, self.written, cache="MISS")


def _write_all(file: BinaryIO, data: bytes) -> None:
    """Write all of `data` to an unbuffered file."""
    view = memoryview(data)
    while view:
        view = view[file.write(view) :]


@contextlib.contextmanager
def _path_of(writer: Writer, data: bytes) -> Iterator[Path]:
    """A local file holding `data` for a verifier: the writer's own temporary, else a
    temporary spool file, removed after."""
    if writer.spool_path is not None:
        yield writer.spool_path
        return
    with tempfile.NamedTemporaryFile(dir=spool_dir()) as f:
        f.write(data)
        f.flush()
        yield Path(f.name)
