"""`_catalog` (what the upstreams confirmed) and `tags/list` (the upstream's list, kept for the
tag TTL; the cached tags if it fails)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlparse

from django.db.models import Exists, OuterRef

from mirror.documents import get_document
from mirror.errors import UpstreamError, UpstreamInvalid, UpstreamNotFound
from mirror.http import client_for
from mirror.upstreams import upstreams_of_kind

from .models import Link, Repository, Tag
from .routing import Route, client_name

MAX_PAGE = 10000


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


def catalog(n: int | None, last: str | None) -> Page:
    """The repositories the upstreams confirmed, by the names clients use."""
    by_id = {u.id: u for u in upstreams_of_kind("oci")}
    confirmed = Repository.objects.filter(Exists(Link.objects.filter(repository=OuterRef("pk"))))
    names = [
        client_name(by_id[upstream_id], name)
        for upstream_id, name in confirmed.values_list("upstream_id", "name")
        if upstream_id in by_id
    ]
    return _page(names, n, last)
