"""Blobs: content-addressed, served from storage or filled once from the upstream, and only
under a name the upstream confirmed holds them (registries/links.py): an unlinked name is
asked about first (HEAD), and gets 404 unless the upstream has the blob there."""

from __future__ import annotations

from dataclasses import dataclass

from mirror import fill, singleflight, stats
from mirror.digests import DigestVerifier, storage_key
from mirror.errors import UpstreamInvalid
from mirror.http import client_for, stream_source

from . import links
from .formats import BLOB
from .routing import Route


@dataclass
class BlobHead:
    size: int
    cache: str


def _path(route: Route, digest: str) -> str:
    return f"/v2/{route.repository}/blobs/{digest}"


def _scope(route: Route) -> str:
    return f"repository:{route.repository}:pull"


def _ask(route: Route, digest: str) -> int | None:
    """HEAD the blob under this name (UpstreamNotFound if it is not there); link it on 200.
    Returns the size the upstream gave, if any."""
    response = client_for(route.upstream).fetch("HEAD", _path(route, digest), scope=_scope(route))
    links.link(route, [(digest, BLOB)])
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isascii() and length.isdigit() else None


def _confirm(route: Route, digest: str) -> None:
    """Have the upstream confirm the blob under this name (a HEAD, once for concurrent
    callers); UpstreamNotFound if it does not have it there."""
    singleflight.once(
        f"oci-confirm:{route.upstream.id}:{route.repository}:blob:{digest}",
        lambda: _ask(route, digest),
        recheck=lambda: links.is_linked(route, digest, BLOB) or None,
    )


def get_blob(route: Route, digest: str) -> fill.Content:
    """The blob's content, filling it from the upstream on a miss.

    Content is served under a name only once the upstream confirmed the name has it: a 200
    to our own GET of it under the name (a cold miss: no HEAD first, one round trip less),
    else a HEAD (the blob came from storage or from a fill someone else started, perhaps
    for another name).

    Raises:
        UpstreamNotFound: the upstream does not have it under this name.
    """
    linked = links.is_linked(route, digest, BLOB)
    fetched = False

    def fetch() -> fill.Source:
        nonlocal fetched
        response = client_for(route.upstream).send(
            "GET",
            _path(route, digest),
            headers={"Accept-Encoding": "identity"},
            scope=_scope(route),
            metadata=False,
        )
        try:
            links.link(route, [(digest, BLOB)])  # the 200 confirms the name
        except BaseException:
            response.close()
            raise
        fetched = True
        return stream_source(response)

    key = storage_key(digest)
    content = fill.get(
        key,
        fetch=fetch,
        verifier=lambda: DigestVerifier(digest),
        upstream_id=route.upstream.id,
    )
    if not linked and not fetched:
        _confirm(route, digest)
    stats.record(
        "mirror.StoredObject", key=key, count_field="access_count", last_field="last_access"
    )
    return content


def head_blob(route: Route, digest: str) -> BlobHead:
    """Size of a blob, from storage or asked of the upstream (HEAD does not fill)."""
    content = fill.stored(storage_key(digest))
    if content is not None and links.is_linked(route, digest, BLOB):
        assert content.size is not None
        return BlobHead(content.size, "HIT")
    size = _ask(route, digest)
    if content is not None:
        assert content.size is not None
        return BlobHead(content.size, "HIT")
    if size is None:
        raise UpstreamInvalid("upstream gave no blob size")
    return BlobHead(size, "MISS")
