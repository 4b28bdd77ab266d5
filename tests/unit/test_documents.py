"""TTL documents and fetch-once: concurrent misses cause one fetch, in this process and
across processes (the fetch-once lock held elsewhere), and failures serve the stale copy."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from mirror.documents import get_document
from mirror.errors import UpstreamNotFound, UpstreamUnavailable
from mirror.models import CachedDocument
from tests.support.keylocks import held_elsewhere

pytestmark = pytest.mark.django_db(transaction=True)


class Counting:
    """A fetch that counts its calls and takes a moment, so that callers overlap."""

    def __init__(
        self, body: bytes = b"v1\n", error: Exception | None = None, seconds: float = 0.2
    ) -> None:
        self.calls = 0
        self.body = body
        self.error = error
        self.seconds = seconds
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return self.body


def _get(fetch: Counting, key: str = "m", ttl: float = 60) -> tuple[bytes, str]:
    try:
        document = get_document("test", key, fetch, ttl=ttl, stale_max_age=3600)
        return document.body, document.cache
    finally:
        connection.close()


def test_concurrent_misses_fetch_once() -> None:
    fetch = Counting()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: _get(fetch), range(20)))
    assert fetch.calls == 1
    assert {body for body, _ in answers} == {b"v1\n"}
    assert _get(fetch) == (b"v1\n", "HIT")


def test_followers_share_the_leaders_failure_and_get_stale() -> None:
    CachedDocument.objects.create(
        namespace="test", key="s", status=200, body=b"old\n", fetched_at="2000-01-01T00:00Z"
    )
    fetch = Counting(error=UpstreamUnavailable("down"))
    with pytest.raises(UpstreamUnavailable):  # far past stale_max_age
        _get(fetch, "s")
    CachedDocument.objects.filter(key="s").update(fetched_at=_minutes_ago(2))
    # A failure is not kept: a caller arriving after the leader's end asks again. A slow
    # leader keeps all ten inside its flight, even on a busy machine.
    fetch = Counting(error=UpstreamUnavailable("down"), seconds=1.0)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: _get(fetch, "s"), range(10)))
    assert fetch.calls == 1
    assert set(answers) == {(b"old\n", "STALE")}


def test_not_found_is_shared_and_cached() -> None:
    fetch = Counting(error=UpstreamNotFound("404"))
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: _raises(lambda: _get(fetch, "n")), range(10)))
    assert results == [UpstreamNotFound] * 10
    assert fetch.calls == 1
    with pytest.raises(UpstreamNotFound, match="cached"):
        _get(fetch, "n")


def test_another_process_fetching_is_waited_for_then_its_answer_used() -> None:
    """The key's lock held elsewhere stands for a fetch in another process."""
    with held_elsewhere("doc:test:x") as release:

        def other_process_finishes() -> None:
            time.sleep(0.3)
            CachedDocument.objects.create(
                namespace="test", key="x", status=200, body=b"theirs\n", fetched_at=_minutes_ago(0)
            )
            connection.close()
            release()

        threading.Thread(target=other_process_finishes).start()
        fetch = Counting()
        assert _get(fetch, "x") == (b"theirs\n", "HIT")
        assert fetch.calls == 0


def test_another_process_failing_lets_us_fetch() -> None:
    with held_elsewhere("doc:test:y") as release:
        threading.Timer(0.2, release).start()
        fetch = Counting(b"ours\n")
        started = time.monotonic()
        assert _get(fetch, "y") == (b"ours\n", "MISS")
        assert fetch.calls == 1
        assert time.monotonic() - started >= 0.2  # not before the other process let go


def test_long_keys() -> None:
    fetch = Counting()
    assert _get(fetch, "k" * 1000)[0] == b"v1\n"


def _raises(call) -> type[Exception] | None:
    try:
        call()
    except Exception as e:
        return type(e)
    return None


def _minutes_ago(minutes: float):
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now() - timedelta(minutes=minutes)
