"""Upstream rate-limit budgets, shared by every process through the database.

Docker Hub tells each client its budget on manifest answers: `ratelimit-limit: 100;w=21600`
and `ratelimit-remaining: 76;w=21600` (requests per window of `w` seconds); any upstream may
answer 429 with Retry-After. When fewer than MIRROR_BUDGET_RESERVE requests remain (or a
Retry-After holds), the mirror spends what is left on what clients need now: cached tags are
served without revalidation (X-Cache: STALE) and prewarm items wait (`defer_seconds`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from .models import UpstreamBudget

log = logging.getLogger(__name__)

_VALUE = re.compile(r"^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?")
# What this process last wrote per upstream and when, to skip writes that change nothing; a
# value is written again after REWRITE_SECONDS, since other processes write the same row.
REWRITE_SECONDS = 5.0
_written: dict[int, tuple[tuple[int | None, int | None, int | None], float]] = {}
_lock = threading.Lock()


def _parse(value: str | None) -> tuple[int | None, int | None]:
    """`100;w=21600` -> (100, 21600); anything else -> (None, None)."""
    match = _VALUE.match(value or "")
    if not match:
        return None, None
    return int(match[1]), int(match[2]) if match[2] else None


def observe(
    upstream_id: int, status: int, headers: dict[str, str], retry_after: float | None = None
) -> None:
    """Record what an upstream answer says of its budget (called for every answer)."""
    limit, window = _parse(headers.get("ratelimit-limit"))
    remaining, window2 = _parse(headers.get("ratelimit-remaining"))
    blocked = None
    if status == 429:  # the wait is the Retry-After's (a minute when it names none)
        blocked = timezone.now() + dt.timedelta(seconds=retry_after or 60)
    if limit is None and remaining is None and blocked is None:
        return
    seen = (limit, remaining, window or window2)
    now = time.monotonic()
    with _lock:
        last = _written.get(upstream_id)
        if blocked is None and last and last[0] == seen and now - last[1] < REWRITE_SECONDS:
            return
        _written[upstream_id] = (seen, now)
    values: dict[str, object] = {"updated": timezone.now()}
    if limit is not None:
        values["limit"] = limit
    if remaining is not None:
        values["remaining"] = remaining
    if window or window2:
        values["window_seconds"] = window or window2
    if blocked is not None:
        values["blocked_until"] = blocked
    try:
        UpstreamBudget.objects.update_or_create(upstream_id=upstream_id, defaults=values)
    except DatabaseError:  # a budget is advice; the answer itself goes on
        log.warning("could not record the budget of upstream %s", upstream_id, exc_info=True)


def defer_seconds(upstream_id: int) -> float:
    """0 when the upstream may be asked freely; else about how long until its budget
    returns (a Retry-After, or the rest of its window), at most MIRROR_PREWARM_MAX_BACKOFF."""
    budget = UpstreamBudget.objects.filter(upstream_id=upstream_id).first()
    if budget is None:
        return 0.0
    now = timezone.now()
    if budget.blocked_until and budget.blocked_until > now:
        wait = (budget.blocked_until - now).total_seconds()
    elif budget.remaining is not None and budget.remaining < settings.MIRROR_BUDGET_RESERVE:
        window = budget.window_seconds or 3600
        wait = (budget.updated + dt.timedelta(seconds=window) - now).total_seconds()
    else:
        return 0.0
    return max(0.0, min(wait, settings.MIRROR_PREWARM_MAX_BACKOFF))


def is_low(upstream_id: int) -> bool:
    """Whether to save the upstream's budget for new content (see the module docstring)."""
    return defer_seconds(upstream_id) > 0
