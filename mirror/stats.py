"""Access counters, buffered in memory and written in batches.

Counting every pull with its own UPDATE would put a database write on the hot path of every
warm request; instead increments are summed per row and flushed every
MIRROR_STATS_FLUSH_SECONDS by a background thread (and at exit). A crash loses at most that
window of counts, which popularity ranking tolerates.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import Counter
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

log = logging.getLogger(__name__)

# (model label, lookup items, count field, last-access field) -> increment
_pending: Counter[tuple[str, tuple[tuple[str, Any], ...], str, str]] = Counter()
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
    global _thread
    with _lock:
        _pending[(model_label, tuple(sorted(lookup.items())), count_field, last_field)] += 1
        if _thread is None:
            _thread = threading.Thread(target=_loop, name="stats-flush", daemon=True)
            _thread.start()
            atexit.register(flush)


def flush() -> None:
    """Write the pending increments now."""
    with _lock:
        batch = dict(_pending)
        _pending.clear()
    if not batch:
        return
    now = timezone.now()
    try:
        for entry, n in list(batch.items()):
            label, lookup, count_field, last_field = entry
            apps.get_model(label).objects.filter(**dict(lookup)).update(
                **{count_field: F(count_field) + n, last_field: now}
            )
            del batch[entry]
    finally:
        if batch:  # keep what was not written for the next flush
            with _lock:
                _pending.update(batch)


def _loop() -> None:
    stop = threading.Event()
    while not stop.wait(settings.MIRROR_STATS_FLUSH_SECONDS):
        try:
            flush()
        except Exception:  # the database may be briefly unavailable; counts are retried
            log.exception("flushing access counts failed")
        finally:
            connection.close()
