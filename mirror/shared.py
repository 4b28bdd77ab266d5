"""Small values every instance of one mirror shares: upstream tokens today.

Django's cache: Redis at REDIS_URL when it is set (all instances of a deployment share it), the
process's memory otherwise (the embedded single-instance default). The cache is an optimisation,
never a dependency: when Redis cannot be reached, a get finds nothing and a set is dropped, and
the caller fetches the value itself, as it would on a cold cache.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.core.cache import cache

log = logging.getLogger(__name__)


def key(*parts: str) -> str:
    """A cache key for `parts` (any text: hashed, so that no length or character is a problem)."""
    return "entrepot:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()


def get(name: str) -> Any:
    try:
        return cache.get(name)
    except Exception as e:  # an unreachable cache is a miss (see the module docstring)
        log.warning("shared cache unreachable: %s", type(e).__name__)
        return None


def put(name: str, value: Any, seconds: float) -> None:
    if seconds < 1:
        return
    try:
        cache.set(name, value, timeout=int(seconds))
    except Exception as e:
        log.warning("shared cache unreachable: %s", type(e).__name__)
