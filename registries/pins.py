"""Which tags are pinned, as this process sees them: without a query per warm request.

Pins are an operator's exceptions, few by nature, so each process keeps all of them and reads
them again every MIRROR_UPSTREAM_CACHE_SECONDS (as it does the upstreams): a pin, unpin or
purge in any process or in the admin applies everywhere within that time, and at once in the
process that made it (`forget`). Checking a pin with a query per request cost a quarter of
the warm manifest rate (a correlated subquery on every tag lookup).
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

from .models import TagPin

# (loaded at, {(upstream id, repository, tag): digest})
_snapshot: tuple[float, dict[tuple[int, str, str], str]] = (float("-inf"), {})
_lock = threading.Lock()


def pinned(upstream_id: int, repository: str, tag: str) -> str | None:
    """The digest the tag is pinned to, or None."""
    global _snapshot
    loaded_at, pins = _snapshot
    if time.monotonic() - loaded_at >= settings.MIRROR_UPSTREAM_CACHE_SECONDS:
        with _lock:
            rows = TagPin.objects.values_list(
                "repository__upstream_id", "repository__name", "name", "digest"
            )
            pins = {(u, r, t): d for u, r, t, d in rows}
            _snapshot = (time.monotonic(), pins)
    return pins.get((upstream_id, repository, tag))


def forget() -> None:
    """Read the pins again at the next lookup (this process changed them)."""
    global _snapshot
    _snapshot = (float("-inf"), {})
