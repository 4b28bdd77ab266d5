"""`_catalog` (what the upstreams confirmed) and `tags/list` (the upstream's list, kept for the
tag TTL; the cached tags if it fails)."""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from urllib.parse import parse_qs, urlparse

from django.db import connection

from mirror.documents import get_document
from mirror.errors import UpstreamError, UpstreamInvalid, UpstreamNotFound
from mirror.http import client_for
from mirror.upstreams import UpstreamInfo, upstreams_of_kind

from .models import Link, Repository, Tag
from .routing import DOCKER_HUB_PREFIX, Route

MAX_PAGE = 10000
_LIBRARY, _LIBRARY_END = "library/", "library0"  # "0" follows "/"
# Python's order is code points': on PostgreSQL, the "C" collation's (and its index's,
# registries/migrations/0004); SQLite's default collation already is.
_C = ' COLLATE "C"' if connection.vendor == "postgresql" else ""
# Segments per query: SQLite takes at most 500 SELECTs in a compound (a Docker Hub upstream
# has three segments, any other one).
_UNION_MAX = 100
_SEGMENT_SQL = (
    "SELECT r.name FROM {repository} r WHERE {where} AND EXISTS "
    "(SELECT 1 FROM {link} l WHERE l.repository_id = r.id) ORDER BY r.name{collate}"
)


@dataclass
class Page:
    items: list[str]
    next_last: str | None
    cache: str = "HIT"


class UnknownName(Exception):
    """The upstream does not know the repository. Not an UpstreamError on purpose: it passes
    through the document cache unrecorded, as nothing is written for unconfirmed names."""


def page_size(value: str | None) -> int | None:
    """`n` as given, or None; ValueError unless it is 1..MAX_PAGE in ASCII digits."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and 0 < int(value) <= MAX_PAGE):
        raise ValueError(f"n must be between 1 and {MAX_PAGE}")
    return int(value)


def _page(items: list[str], n: int | None, last: str | None) -> Page:
    items = sorted(items)
    if last is not None:
        items = [i for i in items if i > last]
    if n is not None and len(items) > n:
        return Page(items[:n], items[n - 1])
    return Page(items, None)


def _fetch_tags(route: Route, n: int | None, last: str | None) -> bytes:
    """The upstream's answer as `{"tags": [...], "next": ...}`; raises UpstreamInvalid for
    anything but a JSON object with a list of strings."""
    params = {k: v for k, v in (("n", n), ("last", last)) if v is not None}
    try:
        response = client_for(route.upstream).fetch(
            "GET",
            f"/v2/{route.repository}/tags/list",
            params=params,
            scope=f"repository:{route.repository}:pull",
        )
    except UpstreamNotFound:
        raise UnknownName(route.repository) from None
    body = response.json()
    tags = body.get("tags") if isinstance(body, dict) else None
    if not (
        isinstance(body, dict)
        and (tags is None or (isinstance(tags, list) and all(isinstance(t, str) for t in tags)))
    ):
        raise UpstreamInvalid("upstream tags list is not an object with a list of strings")
    upstream_next = None
    if link := response.headers.get("Link"):
        query = parse_qs(urlparse(link.split(";")[0].strip("<> ")).query)
        upstream_next = (query.get("last") or [None])[0]
    return json.dumps({"tags": tags or [], "next": upstream_next}).encode()


def list_tags(route: Route, n: int | None, last: str | None) -> Page:
    """A page of the upstream's tags, fetched once per TTL for concurrent callers.

    Raises:
        UnknownName: the upstream does not know the repository.
        UpstreamError: the upstream failed and neither a list nor cached tags exist.
    """
    upstream = route.upstream
    try:
        document = get_document(
            "oci-tags",
            f"{upstream.id}:{route.repository}?n={n or ''}&last={last or ''}",
            lambda: _fetch_tags(route, n, last),
            ttl=upstream.tag_ttl,
            stale_max_age=upstream.stale_max_age,
        )
    except UpstreamError:
        cached = list(
            Tag.objects.filter(
                repository__upstream_id=upstream.id, repository__name=route.repository
            )
            .values_list("name", flat=True)
            .distinct()
        )
        if not cached:
            raise
        return replace(_page(cached, n, last), cache="STALE")
    body = json.loads(document.body)
    # Not every registry honours n/last: paginate what came back, keep its own "next".
    page = _page(body["tags"], n, last)
    return Page(page.items, page.next_last or body["next"], document.cache)


@dataclass(frozen=True)
class _Segment:
    """Repositories of one upstream named in [low, high) (no end when `high` is None) whose
    client names are `shown` + the name without `strip`: an order-preserving map, so that the
    database's name order is the catalog's order within a segment."""

    upstream_id: int
    shown: str
    strip: str
    low: str
    high: str | None


def _segments(upstream: UpstreamInfo) -> list[_Segment]:
    """The segments of an upstream (`client_name` drops Docker Hub's `library/`)."""
    shown = "" if upstream.is_default or not upstream.prefix else f"{upstream.prefix}/"
    if upstream.prefix != DOCKER_HUB_PREFIX:
        return [_Segment(upstream.id, shown, "", "", None)]
    return [
        _Segment(upstream.id, shown, "", "", _LIBRARY),
        _Segment(upstream.id, shown, _LIBRARY, _LIBRARY, _LIBRARY_END),
        _Segment(upstream.id, shown, "", _LIBRARY_END, None),
    ]


def _segment_query(segment: _Segment, n: int | None, last: str | None) -> tuple[str, list]:
    """SQL and parameters for the segment's names after `last`, in order, at most `n` + 1
    of them: a range of the (upstream, name) index, each checked for a link (plain SQL: the
    ORM's compiling cost more than the query). Empty SQL when every name of the segment sorts
    before `last`."""
    # One lower bound only: given two, SQLite seeks to one and filters on the other.
    lower, bound = ">=", segment.low
    if last is not None:
        if last.startswith(segment.shown):
            after = segment.strip + last[len(segment.shown) :]
            if after >= bound:
                lower, bound = ">", after
        elif segment.shown < last[: len(segment.shown)]:
            return "", []
    where = ["r.upstream_id = %s", f"r.name{_C} {lower} %s"]
    params: list[object] = [segment.upstream_id, bound]
    if segment.high is not None:
        where.append(f"r.name{_C} < %s")
        params.append(segment.high)
    sql = _SEGMENT_SQL.format(
        repository=Repository._meta.db_table,
        link=Link._meta.db_table,
        where=" AND ".join(where),
        collate=_C,
    )
    if n is not None:
        sql += " LIMIT %s"
        params.append(n + 1)
    return sql, params


def _names(segments: list[_Segment], n: int | None, last: str | None) -> list[Iterator[str]]:
    """Each segment's client names after `last`, in order, at most `n` + 1 of them: one
    query for all segments (a UNION ALL of each one's range), one round trip to the database
    (on PostgreSQL a `_catalog` page of Docker Hub's three segments took three)."""
    parts: list[str] = []
    params: list[list] = []
    for i, segment in enumerate(segments):
        sql, more = _segment_query(segment, n, last)
        if sql:
            # A subquery each: SQLite allows no ORDER BY or LIMIT on a compound's members.
            parts.append(f"SELECT {i} AS segment, name FROM ({sql}) AS s{i}")
            params.append(more)
    found: list[list[str]] = [[] for _ in segments]
    with connection.cursor() as cursor:
        for at in range(0, len(parts), _UNION_MAX):
            batch = slice(at, at + _UNION_MAX)
            cursor.execute(" UNION ALL ".join(parts[batch]), [p for x in params[batch] for p in x])
            for i, name in cursor.fetchall():
                found[i].append(name)
    return [_shown(s, names) for s, names in zip(segments, found, strict=True)]


def _shown(segment: _Segment, names: list[str]) -> Iterator[str]:
    """The client names of a segment's repositories, in order (UNION ALL keeps no order the
    standard promises: sorted here, Python's order being the "C" collation's)."""
    start = len(segment.strip)
    return (segment.shown + name[start:] for name in sorted(names))


def catalog(n: int | None, last: str | None, visible: Callable[[UpstreamInfo], bool]) -> Page:
    """The repositories the upstreams the client may see (`visible`) confirmed, by the names
    clients use: a merge of the index's ordered ranges, so that a page costs the same however
    many there are."""
    segments = [s for u in upstreams_of_kind("oci") if visible(u) for s in _segments(u)]
    merged = heapq.merge(*_names(segments, n, last))
    items = list(merged if n is None else islice(merged, n + 1))
    if n is not None and len(items) > n:
        return Page(items[:n], items[n - 1])
    return Page(items, None)
