"""Small upstream answers with a TTL, served stale when the upstream fails.

Used for what changes over time but is cheap to keep: a Go module's version list and
`@latest`, checksum-database lookups and tiles. "Not found" is cached too, briefly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from django.utils import timezone

from .errors import UpstreamError, UpstreamNotFound
from .models import CachedDocument


@dataclass
class Document:
    body: bytes
    cache: str  # HIT | MISS | STALE


def get_document(
    namespace: str,
    key: str,
    fetch: Callable[[], bytes],
    *,
    ttl: float,
    stale_max_age: float,
    not_found_ttl: float = 60,
) -> Document:
    """The document under (namespace, key): cached within `ttl`, else fetched.

    Raises:
        UpstreamNotFound: the upstream said so (now, or within `not_found_ttl`).
        UpstreamError: the upstream failed and no copy younger than `stale_max_age` exists.
    """
    row = CachedDocument.objects.filter(namespace=namespace, key=key).first()
    now = timezone.now()
    if row is not None:
        age = (now - row.fetched_at).total_seconds()
        if row.status == 404 and age < not_found_ttl:
            raise UpstreamNotFound(f"{key}: not found (cached)")
        if row.status == 200 and age < ttl:
            return Document(bytes(row.body), "HIT")
    try:
        body = fetch()
    except UpstreamNotFound:
        _save(namespace, key, 404, b"", now)
        raise
    except UpstreamError:
        if row is not None and row.status == 200 and age < stale_max_age:
            return Document(bytes(row.body), "STALE")
        raise
    _save(namespace, key, 200, body, now)
    return Document(body, "MISS")


def _save(namespace: str, key: str, status: int, body: bytes, when: dt.datetime) -> None:
    CachedDocument.objects.update_or_create(
        namespace=namespace, key=key, defaults={"status": status, "body": body, "fetched_at": when}
    )
