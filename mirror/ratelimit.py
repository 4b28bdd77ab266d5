"""Optional per-client rate limits on the protocol paths (MIRROR_RATE_LIMIT = REQUESTS/SECONDS).

A fixed window per client: a user is counted by id, an anonymous client (or one whose
credentials failed) by address. Counters live in Django's cache, so that every instance of a
deployment shares them through Redis (REDIS_URL); without Redis each process counts alone. Like
mirror/shared.py, the cache is never a dependency: when it cannot be reached, requests pass.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from . import shared
from .access import Identity

log = logging.getLogger(__name__)


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the entry MIRROR_TRUSTED_PROXIES hops from the end
    of X-Forwarded-For (the address the outermost trusted proxy saw) when proxies are trusted."""
    hops = settings.MIRROR_TRUSTED_PROXIES
    if hops > 0:
        chain = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        chain = [a for a in chain if a]
        if len(chain) >= hops:
            return chain[-hops]
    return request.META.get("REMOTE_ADDR", "")


def retry_after(request: HttpRequest, identity: Identity) -> float | None:
    """Count this request; seconds until the client's window ends when it is over its limit,
    else None (also when no limit is set or the cache cannot be reached)."""
    limit = settings.MIRROR_RATE_LIMIT
    if limit is None:
        return None
    allowed, window = limit
    client = f"user:{identity.user_id}" if identity.user_id is not None else client_address(request)
    now = time.time()
    slot = int(now // window)
    key = shared.key("rate", client, str(slot))
    try:
        try:
            count = cache.incr(key)
        except ValueError:  # the first request of the window
            count = 1 if cache.add(key, 1, timeout=window + 1) else cache.incr(key)
    except Exception as e:  # an unreachable cache limits no one (see the module docstring)
        log.warning("rate-limit cache unreachable: %s", type(e).__name__)
        return None
    if count <= allowed:
        return None
    return (slot + 1) * window - now
