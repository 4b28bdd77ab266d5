"""System check: the database connections one instance may hold fit PostgreSQL's limit.

With persistent connections (CONN_MAX_AGE > 0) every thread that has touched the database keeps
its own connection open: each gunicorn process holds up to one per request thread, one per
fill running (MIRROR_MAX_FILLS) and one for the access-count flusher. With the defaults on two
CPUs that is 2 x (64 + 32 + 1) = 194, and PostgreSQL's default `max_connections` is 100: past
it, requests fail with "too many clients". `migrate` (run by `make run`) shows the warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning
from django.db import DatabaseError, connections


def connections_per_instance() -> tuple[int, str]:
    """The most connections one instance may hold, and how that figure is made."""
    from config import gunicorn  # the worker count and threads `make run` uses

    per_process = gunicorn.threads + settings.MIRROR_MAX_FILLS + 1
    how = (
        f"{gunicorn.workers} processes x ({gunicorn.threads} threads "
        f"+ {settings.MIRROR_MAX_FILLS} fills + 1)"
    )
    return gunicorn.workers * per_process, how


def check_connection_limit(
    app_configs: Iterable[Any] | None, databases: Iterable[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for alias in databases or ():
        connection = connections[alias]
        if connection.vendor != "postgresql" or not connection.settings_dict["CONN_MAX_AGE"]:
            continue
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW max_connections")
                limit = int(cursor.fetchone()[0])
                cursor.execute("SHOW superuser_reserved_connections")
                limit -= int(cursor.fetchone()[0])
        except DatabaseError:
            continue  # unreachable: the other checks and the first query say so
        need, how = connections_per_instance()
        if need > limit:
            messages.append(
                Warning(
                    f"up to {how} = {need} persistent database connections per instance, "
                    f"but PostgreSQL accepts {limit} (max_connections less the superuser "
                    "reserve), shared by every instance and other clients",
                    hint="Lower WEB_CONCURRENCY, GUNICORN_THREADS or MIRROR_MAX_FILLS, raise "
                    "max_connections, put PgBouncer (transaction pooling) in front, or set "
                    "DATABASE_CONN_MAX_AGE=0 to close connections after each request.",
                    id="mirror.W001",
                )
            )
    return messages
