"""The fill under faults, in-process: every path ends the fill, every wait has a deadline,
limits hold while streaming. A fake upstream and a fault-injecting storage (fill_fakes.py)
make each failure happen at an exact moment; the lease functions are made to raise by
monkeypatching, because a database outage at one precise call cannot be produced with the
real database."""

from __future__ import annotations

import errno
import gc
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db import OperationalError, connection
from django.test import RequestFactory

from mirror import fill, keylocks, leases
from mirror.content import Content
from mirror.digests import DigestVerifier
from mirror.errors import (
    DatabaseUnavailable,
    DigestMismatch,
    Overloaded,
    StorageFull,
    UpstreamInvalid,
    UpstreamUnavailable,
)
from mirror.filler import Fill
from mirror.models import FillLease
from mirror.responses import RangeNotSatisfiable, content_response
from tests.unit.fill_fakes import FaultyStorage, Upstream, key_of

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")
DATA = os.urandom(300 * 1024)
KEY, DIGEST = key_of(DATA)
LEASE = 0.3  # every wait on a fill: two of these without progress


@pytest.fixture
def store(tmp_path, settings, monkeypatch) -> Iterator[FaultyStorage]:
    settings.DATA_DIR = tmp_path
    settings.MIRROR_FILL_LEASE_SECONDS = LEASE
    settings.MIRROR_FILL_ABANDON_SECONDS = 60
    settings.MIRROR_MAX_FILLS = 8
    settings.MIRROR_FILL_QUEUE_SECONDS = 0.3
    settings.MIRROR_MIN_FREE_BYTES = 0
    settings.MIRROR_MAX_BLOB_BYTES = 0
    settings.MIRROR_S3_REDIRECT = False
    storage = FaultyStorage(tmp_path / "store")
    monkeypatch.setattr(fill, "get_storage", lambda: storage)
    yield storage
    # Every fill ended: forgotten, its slot free.
    assert _eventually(lambda: not fill._fills._fills and fill._fills._slots_taken == 0)


def _eventually(check: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _bounded(call: Callable[[], T], seconds: float = 5) -> T:
    """`call()` in a thread of its own; the test fails if it has not ended in `seconds`
    (the old code blocked for ever there)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as e:
            result["error"] = e
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


def _get(up: Upstream, data: bytes = DATA, **kwargs: Any) -> Content:
    key, digest = key_of(data)
    return fill.get(key, fetch=up.fetch, verifier=lambda: DigestVerifier(digest), **kwargs)


def _read(content: Content) -> bytes:
    body = content.open()
    if hasattr(body, "read"):
        with body:
            return body.read()
    try:
        return b"".join(body)
    finally:
        body.close()


def _fetch_and_read(up: Upstream, data: bytes = DATA, **kwargs: Any) -> tuple[str, bytes]:
    content = _get(up, data, **kwargs)
    return content.cache, _read(content)


def _raise_once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Make `module.name` raise OperationalError on its first call only (a database
    hiccup); return the list its calls are counted in."""
    real = getattr(module, name)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("database is briefly unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return calls


def _stalled_fill(up: Upstream) -> Content:
    """A fill under way whose upstream stalls after its first chunk."""
    up.pause_after = 1
    content = _get(up)
    assert _eventually(lambda: not up.flowing.is_set())
    return content


def test_miss_streams_then_hits(store: FaultyStorage) -> None:
    up = Upstream(DATA)
    assert _bounded(lambda: _fetch_and_read(up)) == ("MISS", DATA)
    assert _eventually(lambda: store.stat(KEY) == len(DATA))
    assert _bounded(lambda: _fetch_and_read(up)) == ("HIT", DATA)
    assert up.fetches == 1


def test_a_hit_whose_object_leaves_storage_before_it_is_opened_is_fetched_anew(
    store: FaultyStorage,
) -> None:
    """Purged or evicted by another process between the look in storage and the open (on
    S3, while this process still knew its size): the client gets the object, not a 503."""
    up = Upstream(DATA)
    assert _bounded(lambda: _fetch_and_read(up)) == ("MISS", DATA)
    assert _eventually(lambda: store.stat(KEY) == len(DATA) and not fill._fills._fills)
    hit = _bounded(lambda: _get(up))
    assert hit.cache == "HIT"
    store.delete(KEY)
    up.closed.clear()  # the fake answers again
    assert _bounded(lambda: _read(hit)) == DATA
    assert (hit.cache, up.fetches) == ("MISS", 2)
    assert _eventually(lambda: store.stat(KEY) == len(DATA))


def test_release_failure_still_forgets_the_fill(store, monkeypatch) -> None:
    """One database hiccup when releasing the lease of a failed fill: the key is usable
    again once that lease expires (the old code kept the failed fill for ever)."""
    calls = _raise_once(monkeypatch, leases, "release")
    bad = Upstream(DATA[:-1] + b"!")
    with pytest.raises(DigestMismatch):
        _bounded(lambda: _fetch_and_read(bad))
    assert _eventually(lambda: calls and KEY not in fill._fills._fills)
    assert _bounded(lambda: _fetch_and_read(Upstream(DATA))) == ("MISS", DATA)


def test_abort_failure_still_wakes_readers(store: FaultyStorage) -> None:
    """The storage abort raises (an S3 abort timing out): every reader gets the fill's
    error, and the key can be filled again at once."""
    store.faults.abort = TimeoutError("abort timed out")
    bad = Upstream(DATA[:-1] + b"!")
    bad.flowing.clear()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            _fetch_and_read(bad)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=lambda: _bounded(read)) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    bad.flowing.set()
    for thread in threads:
        thread.join(5)
    assert len(errors) == 3 and all(isinstance(e, DigestMismatch) for e in errors), errors
    assert bad.fetches == 1
    assert _bounded(lambda: _fetch_and_read(Upstream(DATA))) == ("MISS", DATA)
    assert _eventually(lambda: store.stat(KEY) is not None and list(store.tmp.iterdir()) == [])


def test_lease_failure_ends_the_fill_cleanly(store, monkeypatch) -> None:
    """Taking the lease of a streamed fill (once the upstream has answered) fails: the caller
    and a follower waiting for the upstream's answer get an error, the upstream body is
    closed, no temporary is left, and the key is free at once."""
    _raise_once(monkeypatch, leases, "claim")
    up = Upstream(DATA)
    up.answering.clear()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _get(up)
        except BaseException as e:
            errors.append(e)

    first = threading.Thread(target=lambda: _bounded(call))
    first.start()
    assert up.asked.wait(5)
    follower = threading.Thread(target=lambda: _bounded(call))
    follower.start()
    time.sleep(0.1)  # the follower waits on the fill being opened
    up.answering.set()
    first.join(5)
    follower.join(5)
    assert len(errors) == 2 and all(isinstance(e, DatabaseUnavailable) for e in errors)
    assert up.closed.is_set()
    assert list(store.tmp.iterdir()) == []
    assert leases.current(KEY) is None
    assert _bounded(lambda: _fetch_and_read(Upstream(DATA))) == ("MISS", DATA)


def test_database_down_before_the_fill_is_a_clean_error(store, monkeypatch) -> None:
    """The look for a lease elsewhere, once the lock is ours, fails: no upstream request."""
    _raise_once(monkeypatch, leases, "current")
    up = Upstream(DATA)
    with pytest.raises(DatabaseUnavailable) as caught:
        _bounded(lambda: _get(up))
    assert caught.value.retry_after and up.fetches == 0
    assert _bounded(lambda: _fetch_and_read(up)) == ("MISS", DATA)  # its slot was given back


def test_follower_of_a_stalled_fill_gives_up(store: FaultyStorage) -> None:
    up = Upstream(DATA)
    content = _stalled_fill(up)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="stalled"):
        _bounded(lambda: _read(content))
    assert time.monotonic() - started < 3
    up.flowing.set()  # let the fill finish


def test_waiting_for_the_upstreams_answer_has_a_deadline(store: FaultyStorage) -> None:
    up = Upstream(DATA)
    up.answering.clear()
    leader = threading.Thread(target=lambda: _bounded(lambda: _fetch_and_read(up), 10))
    leader.start()
    assert up.asked.wait(5)
    with pytest.raises(UpstreamUnavailable, match="timed out"):
        _bounded(lambda: _get(up))
    up.answering.set()
    leader.join(5)


def _foreign_lease(key: str, owner: str, spool: str = "") -> None:
    """A lease held by a filler this process cannot see, alive for an hour."""
    FillLease.objects.create(
        key=key,
        owner=owner,
        spool_path=spool,
        size=len(DATA),
        expires_at="2999-01-01T00:00:00Z",
    )


def test_cross_host_follower_gives_up_in_bounded_time(store: FaultyStorage) -> None:
    _foreign_lease(KEY, "another-host:1:abc")
    up = Upstream(DATA)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        _bounded(lambda: _get(up))
    assert 2 * LEASE - 0.1 < time.monotonic() - started < 3
    assert caught.value.retry_after == LEASE
    assert up.fetches == 0  # it never went upstream itself


def test_same_host_follower_of_a_stalled_spool_gives_up(store, tmp_path) -> None:
    spool = tmp_path / "spool-of-another-process"
    spool.write_bytes(DATA[:100_000])
    _foreign_lease(KEY, f"{leases.HOST}:1:abc", str(spool))
    up = Upstream(DATA)
    content = _bounded(lambda: _get(up))
    assert up.fetches == 0  # the lock was free; the lease elsewhere is followed, not repeated
    with pytest.raises(UpstreamUnavailable, match="stalled"):
        _bounded(lambda: _read(content))


def _open_under(folder: Path) -> list[str]:
    """The files under `folder` this process has open (the spool, a stored object): what
    other tests' threads open and close meanwhile does not count."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # closed since the listing
            continue
        if target.startswith(f"{folder}/"):
            found.append(target)
    return found


def test_unsatisfiable_range_during_a_fill_opens_no_descriptor(
    store: FaultyStorage, tmp_path: Path
) -> None:
    up = Upstream(DATA)
    up.flowing.clear()
    content = _bounded(lambda: _get(up))
    filling = sorted(_open_under(tmp_path))  # the filler's own (the upstream is paused)
    request = RequestFactory().get("/", HTTP_RANGE=f"bytes={len(DATA) + 10}-")
    with pytest.raises(RangeNotSatisfiable):
        content_response(request, content, "application/octet-stream")
    assert sorted(_open_under(tmp_path)) == filling
    up.flowing.set()
    assert _eventually(lambda: store.stat(KEY) is not None and not fill._fills._fills)
    del content
    gc.collect()
    assert _eventually(lambda: not _open_under(tmp_path), 3), _open_under(tmp_path)


def test_lock_rechecks_the_cache(store, monkeypatch) -> None:
    """Another instance commits between our look at storage and our lock: we serve its
    object and never go upstream."""
    real_acquire = keylocks.acquire

    def acquire_after_commit(key: str):
        writer = store.inner.writer(KEY)
        writer.write(DATA)
        writer.commit()
        return real_acquire(key)

    monkeypatch.setattr(keylocks, "acquire", acquire_after_commit)
    up = Upstream(DATA)
    assert _bounded(lambda: _fetch_and_read(up)) == ("HIT", DATA)
    assert up.fetches == 0
    monkeypatch.undo()
    mine = keylocks.acquire(fill.lock_key(KEY))  # the lock was let go
    assert mine is not None
    keylocks.release(mine)


def test_body_longer_than_announced_is_refused(store: FaultyStorage) -> None:
    up = Upstream(DATA + b"x" * 100_000, announce=len(DATA))
    with pytest.raises(DigestMismatch, match="more than"):
        _bounded(lambda: _fetch_and_read(up))
    assert store.stat(KEY) is None
    assert _eventually(lambda: list(store.tmp.iterdir()) == [])


def test_endless_body_stops_at_the_limit(store: FaultyStorage) -> None:
    up = Upstream(DATA, announce=None, endless=True)
    with pytest.raises(UpstreamInvalid, match="limit"):
        _bounded(lambda: _fetch_and_read(up, max_size=1024 * 1024))
    assert up.closed.wait(5)
    assert up.sent <= 1024 * 1024 + 64 * 1024
    assert store.stat(KEY) is None
    assert _eventually(lambda: list(store.tmp.iterdir()) == [])


def test_blob_limit_setting_applies_by_default(store, settings) -> None:
    settings.MIRROR_MAX_BLOB_BYTES = 100_000
    up = Upstream(DATA)  # announces 300 KiB: refused before any byte is read
    with pytest.raises(UpstreamInvalid):
        _bounded(lambda: _get(up))
    assert up.sent == 0 and up.closed.is_set()


def test_fill_nobody_reads_is_abandoned(store, settings) -> None:
    settings.MIRROR_FILL_ABANDON_SECONDS = 0.3
    up = Upstream(os.urandom(4 * 1024 * 1024), delay=0.02)  # about 1.3 s in all
    content = _bounded(lambda: _get(up, up.data))
    body = content.open()
    next(body)
    body.close()  # the client went away
    assert up.closed.wait(3)
    assert up.sent < len(up.data)
    key, _ = key_of(up.data)
    assert store.stat(key) is None


def test_fill_someone_reads_is_not_abandoned(store, settings) -> None:
    settings.MIRROR_FILL_ABANDON_SECONDS = 0.2
    up = Upstream(os.urandom(1024 * 1024), delay=0.02)  # about 0.35 s in all
    assert _bounded(lambda: _fetch_and_read(up, up.data)) == ("MISS", up.data)


def test_fills_beyond_the_limit_are_refused(store, settings) -> None:
    settings.MIRROR_MAX_FILLS = 1
    first = Upstream(DATA)
    content = _stalled_fill(first)
    other = os.urandom(1000)
    started = time.monotonic()
    with pytest.raises(Overloaded) as caught:
        _bounded(lambda: _get(Upstream(other), other))
    assert 0.25 < time.monotonic() - started < 2 and caught.value.retry_after >= 1
    # A follower of the running fill takes no slot.
    follower = _bounded(lambda: _get(first))
    first.flowing.set()
    assert _bounded(lambda: _read(follower)) == DATA
    assert _bounded(lambda: _read(content)) == DATA
    assert _bounded(lambda: _fetch_and_read(Upstream(other), other)) == ("MISS", other)


def test_full_disk_while_writing_is_storage_full(store, caplog) -> None:
    store.faults.write = OSError(errno.ENOSPC, "No space left on device")
    store.faults.write_after = 1
    with pytest.raises(StorageFull):
        _bounded(lambda: _fetch_and_read(Upstream(DATA)))
    assert "storage full" in caplog.text
    assert store.stat(KEY) is None
    assert _eventually(lambda: list(store.tmp.iterdir()) == [])


def test_full_disk_at_commit_stores_nothing(store, caplog) -> None:
    """The bytes were verified before the commit: the client has them whole; the cache
    does not, and says why."""
    store.faults.commit = OSError(errno.ENOSPC, "No space left on device")
    up = Upstream(DATA, delay=0.03)  # chunks far enough apart to reach the client one by one
    content = _bounded(lambda: _get(up))
    body = content.open()
    first = next(body)  # the client is reading when the fill ends
    assert first + _bounded(lambda: b"".join(body)) == DATA
    assert _eventually(lambda: "storage full" in caplog.text)
    assert store.stat(KEY) is None
    assert _eventually(lambda: list(store.tmp.iterdir()) == [])


def test_below_the_free_space_floor_no_fill_starts(store, settings) -> None:
    settings.MIRROR_MIN_FREE_BYTES = 1000
    store.free = 999
    up = Upstream(DATA)
    with pytest.raises(StorageFull):
        _bounded(lambda: _get(up))
    assert up.fetches == 0 and leases.current(KEY) is None


def test_filler_reports_miss_even_when_its_reader_starts_after_the_commit(
    store, monkeypatch
) -> None:
    real_reader = Fill.reader

    def late_reader(self: Fill) -> Content:
        with self.cond:
            self.cond.wait_for(lambda: self.state == "done", 5)
        return real_reader(self)

    monkeypatch.setattr(Fill, "reader", late_reader)
    assert _bounded(lambda: _fetch_and_read(Upstream(DATA))) == ("MISS", DATA)


def test_small_object_takes_the_short_path(store: FaultyStorage) -> None:
    small = os.urandom(10 * 1024)
    up = Upstream(small)
    threads = threading.active_count()
    content = _get(up, small)
    key, _ = key_of(small)
    assert content.cache == "MISS" and _read(content) == small
    assert threading.active_count() == threads  # no fill or store thread
    assert store.stat(key) == len(small) and list(store.tmp.iterdir()) == []
    assert fill.stored(key) is not None and up.fetches == 1


def test_small_object_that_fails_verification_stores_nothing(store: FaultyStorage) -> None:
    small = os.urandom(10 * 1024)
    up = Upstream(small[:-1] + bytes([small[-1] ^ 1]))
    with pytest.raises(DigestMismatch):
        _get(up, small)
    assert fill.stored(key_of(small)[0]) is None and list(store.tmp.iterdir()) == []
