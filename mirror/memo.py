"""A bounded in-process cache of answers whose source of truth is the database.

A warm request should cost no query where the answer is known and cannot have changed: a
protocol app keeps what it answered here, each entry with its own deadline (never past what
the answer itself may be trusted for, and at most a few seconds, so that another process's
change, such as an operator's purge, applies everywhere within that time). Changes made in this
process clear it at once (`clear`). Thread-safe; least recently used entries go first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import TLRUCache


class Memo:
    """`maxsize` entries, or with `sizeof` (of a value) `maxsize` of what it counts in all;
    a value larger than that is not kept."""

    def __init__(self, maxsize: int, sizeof: Callable[[Any], int] | None = None) -> None:
        self._cache: TLRUCache[Hashable, tuple[float, Any]] = TLRUCache(
            maxsize,
            ttu=lambda _key, value, _now: value[0],
            timer=time.monotonic,
            getsizeof=None if sizeof is None else lambda entry: sizeof(entry[1]),
        )
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._cache.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, value: Any, seconds: float) -> None:
        """Keep `value` for at most `seconds` (nothing when that is not positive)."""
        if seconds <= 0:
            return
        with self._lock, contextlib.suppress(ValueError):  # ValueError: larger than maxsize
            self._cache[key] = (time.monotonic() + seconds, value)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
