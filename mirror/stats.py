"""Access counters, buffered in memory and written in batches; and writes put off while the
database is away.

Counting every pull with its own UPDATE would put a database write on the hot path of every
warm request; instead increments are summed per row and flushed every
MIRROR_STATS_FLUSH_SECONDS by a background thread (and at exit). A crash loses at most that
window of counts, which popularity ranking tolerates.

The same thread retries the writes a fill could not make at its end because the database was
unreachable (`write_later`: the index row of an object it committed to storage, the release of
its lease), so that an outage leaves no committed object unindexed and no lease row behind.
While the database is away the thread logs one warning, not one per flush, and one line when
it is back.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import reduce
from operator import or_
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from .errors import DATABASE_DOWN

log = logging.getLogger(__name__)

# (model label, lookup items, count field, last-access field) -> increment
Entry = tuple[str, tuple[tuple[str, Any], ...], str, str]
_pending: Counter[Entry] = Counter()
UPDATE_ROWS = 200  # rows one UPDATE names at most (SQLite's parameter limit, plan size)
# Writes put off until the database is back: (what, write).
_writes: list[tuple[str, Callable[[], object]]] = []
_lock = threading.Lock()
_thread: threading.Thread | None = None


def record(
    model_label: str,
    *,
    count_field: str = "pull_count",
    last_field: str = "last_pull",
    **lookup: Any,
) -> None:
    """Count one access to the row of `model_label` matching `lookup` (e.g. `pk=3`)."""
    with _lock:
        _pending[(model_label, tuple(sorted(lookup.items())), count_field, last_field)] += 1
        _start()


def write_later(what: str, write: Callable[[], object]) -> None:
    """Have the flusher retry `write`, an idempotent database write that failed because the
    database is unreachable, until it succeeds (a write that then fails otherwise is logged
    and dropped). `what` names it in the log."""
    with _lock:
        _writes.append((what, write))
        _start()


def _start() -> None:
    """Start the flusher thread (with `_lock` held)."""
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_loop, name="stats-flush", daemon=True)
        _thread.start()
        atexit.register(_flush_at_exit)


def flush() -> None:
    """Make the put-off writes, then write the pending increments, now. Raises the
    database's error when it is unreachable; what was not written is kept for the next."""
    _flush_writes()
    _flush_counts()


def _flush_writes() -> None:
    with _lock:
        writes = list(_writes)
        _writes.clear()
    try:
        while writes:
            what, write = writes[0]
            try:
                write()
            except DATABASE_DOWN:
                raise
            except Exception:
                log.exception("put-off write failed, dropped: %s", what)
            del writes[0]
    finally:
        if writes:  # keep what was not written for the next flush, in order
            with _lock:
                _writes[:0] = writes


def _flush_counts() -> None:
    """One UPDATE per model, fields and increment for up to UPDATE_ROWS rows at once: most
    rows were accessed once since the last flush, and a statement per row cost a warm
    `go mod download` 5 % of a worker's CPU (py-spy, 2026-12-02)."""
    with _lock:
        batch = dict(_pending)
        _pending.clear()
    if not batch:
        return
    now = timezone.now()
    same_update: defaultdict[tuple[str, str, str, int], list[Entry]] = defaultdict(list)
    for entry, n in batch.items():
        label, _lookup, count_field, last_field = entry
        same_update[(label, count_field, last_field, n)].append(entry)
    try:
        for (label, count_field, last_field, n), entries in same_update.items():
            for start in range(0, len(entries), UPDATE_ROWS):
                chunk = entries[start : start + UPDATE_ROWS]
                rows = reduce(or_, (Q(**dict(lookup)) for _label, lookup, _c, _l in chunk))
                apps.get_model(label).objects.filter(rows).update(
                    **{count_field: F(count_field) + n, last_field: now}
                )
                for entry in chunk:
                    del batch[entry]
    finally:
        if batch:  # keep what was not written for the next flush
            with _lock:
                _pending.update(batch)


def _flush_at_exit() -> None:
    try:
        flush()
    except DATABASE_DOWN as e:
        log.warning("database unavailable at exit: buffered counts and writes lost (%s)", e)


def _loop() -> None:
    stop = threading.Event()
    away = False
    while not stop.wait(settings.MIRROR_STATS_FLUSH_SECONDS):
        try:
            flush()
            if away:
                log.warning("database reachable again: buffered counts and writes made")
                away = False
        except DATABASE_DOWN as e:
            if not away:
                log.warning("database unavailable: counts and writes kept for later (%s)", e)
                away = True
        except Exception:
            log.exception("flushing access counts failed")
        finally:
            connection.close()
