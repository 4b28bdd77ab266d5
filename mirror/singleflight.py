"""Fetch once: concurrent callers asking for the same thing cause one upstream request.

Used for the small things that do not go through the streaming fill (mirror/fill.py): a tag
revalidation, a manifest, a `tags/list`, a Go `list` or `@latest`, a checksum-database
lookup. The key names the thing asked (upstream, name, kind[, media type]), not a digest.

- In this process, the first caller (the leader) runs `fetch`; the others wait for it and get
  its result or its exception.
- Across processes and instances, the leader holds the fetch-once lock of the key
  (mirror/keylocks.py). A caller in another process that finds it taken
  polls: it calls `recheck()`, which reads what the leader stored (None: not there yet, or the
  leader failed), and tries the lock again; only with the lock does it fetch itself. A caller
  that takes the lock calls `recheck()` once too: a leader may have finished between its look
  and its lock.

Every wait is bounded: a leader that outlives `content.wait_seconds()` (two lease periods,
as for fills) stops being waited for, and the caller fetches on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import keylocks
from .content import wait_seconds
from .errors import UpstreamUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL = 0.05


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_flights: dict[str, _Flight] = {}
_lock = threading.Lock()


def once(key: str, fetch: Callable[[], T], *, recheck: Callable[[], T | None] | None = None) -> T:
    """`fetch()`'s result, with at most one `fetch` of `key` running at a time.

    Raises whatever the leader's `fetch` raised (to its in-process followers too), or
    UpstreamUnavailable when a leader in this process does not finish in time.
    """
    with _lock:
        flight = _flights.get(key)
        leader = flight is None
        if leader:
            flight = _flights[key] = _Flight()
    assert flight is not None
    if not leader:
        if not flight.done.wait(wait_seconds()):
            raise UpstreamUnavailable(f"timed out waiting for a concurrent fetch of {key[:200]}")
        if flight.error is not None:
            raise flight.error
        return flight.result
    try:
        flight.result = _lead(key, fetch, recheck)
        return flight.result
    except BaseException as e:
        flight.error = e
        raise
    finally:
        with _lock:
            del _flights[key]
        flight.done.set()


def _lead(key: str, fetch: Callable[[], T], recheck: Callable[[], T | None] | None) -> T:
    """Run `fetch` under the cross-process lock, or take what another process stored."""
    give_up = time.monotonic() + wait_seconds()
    while True:
        try:
            held = keylocks.acquire(key)
        except Exception:  # the locks cannot be reached: fetch uncoordinated
            log.warning("fetch-once lock for %s unavailable; fetching anyway", key[:200])
            return fetch()
        if held is not None:
            try:
                # Another process may have stored it between our look and our lock.
                if recheck is not None and (stored := recheck()) is not None:
                    return stored
                return fetch()
            finally:
                try:
                    keylocks.release(held)
                except Exception:  # it ends with the session or process anyway
                    log.warning("releasing the fetch-once lock of %s failed", key[:200])
        time.sleep(POLL)
        if recheck is not None and (stored := recheck()) is not None:
            return stored
        if time.monotonic() >= give_up:
            return fetch()
