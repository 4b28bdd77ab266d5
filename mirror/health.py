"""Liveness (the process answers) and readiness (database reachable with every migration
applied, storage writable with room, the broker reachable when REDIS_URL is set).

`/readyz` writes and removes a small probe in storage on every call (an S3 PUT and DELETE, or
a local file with an fsync): probe it every few seconds, not in a tight loop. Every check is
bounded in time (the database's and Redis's connect timeouts, S3's own), so a probe answers
503 rather than hang when a service is unreachable.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

from .errors import StorageFull
from .storage import get_storage

if TYPE_CHECKING:  # imported by the first readiness check that pings Redis (~5 MiB)
    import redis

# Redis (the broker and shared cache) must answer a PING within this many seconds.
REDIS_TIMEOUT = 2.0


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _unavailable(reason: str) -> JsonResponse:
    return JsonResponse({"status": "unavailable", "reason": reason}, status=503)


class _Migrations:
    """Whether every migration is applied. Once true it stays true for this process (a
    running release only ever sees migrations applied, not removed), so the migration graph
    is loaded only until then: while a rollout's migrations Job runs, not on every probe."""

    def __init__(self) -> None:
        self._applied = False

    def pending(self) -> int:
        if self._applied:
            return 0
        executor = MigrationExecutor(connection)
        pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
        self._applied = pending == 0
        return pending


class _Broker:
    """A PING to Redis (REDIS_URL), through one client per process with short timeouts."""

    def __init__(self) -> None:
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    def ping(self) -> None:
        with self._lock:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_connect_timeout=REDIS_TIMEOUT,
                    socket_timeout=REDIS_TIMEOUT,
                )
        self._client.ping()


_migrations = _Migrations()
_broker = _Broker()


def readyz(request: HttpRequest) -> JsonResponse:
    # Any failure means "not ready"; the reason tells the operator which part failed (its
    # kind only: an exception's text may carry a URL with credentials).
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        pending = _migrations.pending()
    except Exception as e:
        return _unavailable(f"database: {type(e).__name__}")
    if pending:
        return _unavailable(f"database: {pending} migrations not applied")
    try:
        get_storage().check_writable(settings.MIRROR_MIN_FREE_BYTES)
    except StorageFull as e:
        return _unavailable(str(e))
    except OSError as e:  # the local folder cannot even be set up in this process
        return _unavailable(f"storage not writable: {e}")
    except Exception as e:
        return _unavailable(f"storage: {type(e).__name__}")
    if settings.REDIS_URL:
        try:
            _broker.ping()
        except Exception as e:
            return _unavailable(f"broker: {type(e).__name__}")
    return JsonResponse({"status": "ok"})
