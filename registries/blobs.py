"""Blobs: content-addressed, served from storage or filled once from the upstream."""

from __future__ import annotations

from dataclasses import dataclass

from mirror import fill, stats
from mirror.digests import DigestVerifier, storage_key
from mirror.errors import UpstreamNotFound
from mirror.http import client_for

from .errors import RegistryError
from .routing import Route


@dataclass
class BlobHead:
    size: int
    cache: str


def _path(route: Route, digest: str) -> str:
    return f"/v2/{route.repository}/blobs/{digest}"


def _scope(route: Route) -> str:
    return f"repository:{route.repository}:pull"


def get_blob(route: Route, digest: str) -> fill.Content:
    """The blob's content, filling it from the upstream on a miss."""
    key = storage_key(digest)

    def fetch() -> fill.Source:
        response = client_for(route.upstream).send(
            "GET",
            _path(route, digest),
            headers={"Accept-Encoding": "identity"},
            scope=_scope(route),
            stream=True,
            metadata=False,
        )
        length = response.headers.get("Content-Length", "")
        return fill.Source(
            size=int(length) if length.isdigit() else None,
            chunks=response.iter_raw(),
            close=response.close,
        )

    try:
        content = fill.get(
            key,
            fetch=fetch,
            verifier=lambda: DigestVerifier(digest),
            upstream_id=route.upstream.id,
        )
    except UpstreamNotFound:
        raise RegistryError("BLOB_UNKNOWN", "blob unknown", {"digest": digest}) from None
    stats.record(
        "mirror.StoredObject", key=key, count_field="access_count", last_field="last_access"
    )
    return content


def head_blob(route: Route, digest: str) -> BlobHead:
    """Size of a blob, from storage or asked of the upstream (HEAD does not fill)."""
    if (content := fill.stored(storage_key(digest))) is not None:
        assert content.size is not None
        return BlobHead(content.size, "HIT")
    client = client_for(route.upstream)
    try:
        response = client.send("HEAD", _path(route, digest), scope=_scope(route))
    except UpstreamNotFound:
        raise RegistryError("BLOB_UNKNOWN", "blob unknown", {"digest": digest}) from None
    length = response.headers.get("Content-Length", "")
    if not length.isdigit():
        raise RegistryError("BLOB_UNKNOWN", "upstream gave no blob size", {"digest": digest})
    return BlobHead(int(length), "MISS")
