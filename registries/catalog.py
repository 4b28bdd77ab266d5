"""`_catalog` (what is cached) and `tags/list` (the upstream's list, cached tags if it fails)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlparse

from django.http import HttpRequest, JsonResponse

from mirror.errors import UpstreamError, UpstreamNotFound
from mirror.http import client_for
from mirror.upstreams import upstreams_of_kind

from .errors import RegistryError
from .models import Repository, Tag
from .routing import Route, client_name

MAX_PAGE = 10000


@dataclass
class TagPage:
    tags: list[str]
    next_last: str | None
    cache: str


def _page(items: list[str], n: int | None, last: str | None) -> tuple[list[str], str | None]:
    items = sorted(items)
    if last is not None:
        items = [i for i in items if i > last]
    if n is not None and len(items) > n:
        return items[:n], items[n - 1]
    return items, None


def list_tags(route: Route, n: int | None, last: str | None) -> TagPage:
    client = client_for(route.upstream)
    params = {k: v for k, v in (("n", n), ("last", last)) if v is not None}
    try:
        response = client.send(
            "GET",
            f"/v2/{route.repository}/tags/list",
            params=params,
            scope=f"repository:{route.repository}:pull",
        )
        body = json.loads(response.content)
        tags = [t for t in body.get("tags") or [] if isinstance(t, str)]
        upstream_next = None
        if link := response.headers.get("Link"):
            query = parse_qs(urlparse(link.split(";")[0].strip("<> ")).query)
            upstream_next = (query.get("last") or [None])[0]
        # Not every registry honours n/last: paginate what came back, keep its own "next".
        tags, next_last = _page(tags, n, last)
        next_last = next_last or upstream_next
        return TagPage(tags, next_last, "MISS")
    except UpstreamNotFound:
        raise RegistryError("NAME_UNKNOWN", "repository not known upstream") from None
    except (UpstreamError, ValueError):
        cached = list(
            Tag.objects.filter(
                repository__upstream_id=route.upstream.id, repository__name=route.repository
            ).values_list("name", flat=True)
        )
        if not cached:
            raise
        tags, next_last = _page(cached, n, last)
        return TagPage(tags, next_last, "STALE")


def catalog_response(request: HttpRequest) -> JsonResponse:
    """The repositories this mirror has cached, by the names clients use."""
    n = request.GET.get("n")
    if n is not None and not (n.isdigit() and 0 < int(n) <= MAX_PAGE):
        raise RegistryError("PAGINATION_NUMBER_INVALID", "n must be between 1 and 10000")
    by_id = {u.id: u for u in upstreams_of_kind("oci")}
    names = [
        client_name(by_id[upstream_id], name)
        for upstream_id, name in Repository.objects.values_list("upstream_id", "name")
        if upstream_id in by_id
    ]
    last = request.GET.get("last") or None
    page, next_last = _page(names, int(n) if n else None, last)
    response = JsonResponse({"repositories": page})
    if next_last is not None:
        query = urlencode({"n": n, "last": next_last})
        response["Link"] = f'</v2/_catalog?{query}>; rel="next"'
    return response
