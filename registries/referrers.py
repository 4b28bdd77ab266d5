"""The OCI 1.1 referrers API (`GET /v2/NAME/referrers/DIGEST`): the manifests whose `subject`
is DIGEST, as descriptors of an OCI index.

Proxied from the upstream when it has the API; when it answers 404 there (distribution 2.x,
Docker Hub), built from the referrers tag schema `sha256-HEX`, which clients pushing to such
registries maintain. Kept for the upstream's tag TTL, served stale when the upstream fails.
The mirror fetches the whole list and applies the `artifactType` filter itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mirror.documents import get_document
from mirror.errors import UpstreamInvalid, UpstreamNotFound
from mirror.http import UpstreamClient, client_for

from . import links, manifests
from .formats import MANIFEST, MAX_MANIFEST, OCI_INDEX, parse_manifest
from .routing import Route

# Pages of an upstream's referrers list followed at most (each one is capped in size).
MAX_PAGES = 20
_NEXT = re.compile(r'<(/v2/[^>]*)>\s*;\s*rel="?next"?')
_NOT_TAG_CHARACTER = re.compile(r"[^a-zA-Z0-9._-]")


@dataclass
class Referrers:
    descriptors: list[dict[str, Any]]
    cache: str  # HIT | MISS | STALE


class _NothingToKeep(Exception):
    """No referrers, for a name the upstream has not confirmed: answered, never stored."""


def referrers_tag(digest: str) -> str:
    """The referrers tag schema: `<algorithm[:32]>-<encoded[:64]>`, other characters `-`."""
    algorithm, encoded = digest.split(":", 1)
    return _NOT_TAG_CHARACTER.sub("-", f"{algorithm[:32]}-{encoded[:64]}")


def get_referrers(route: Route, digest: str, artifact_type: str | None) -> Referrers:
    """The referrers of `digest` in this repository, filtered by `artifact_type` if given.

    Raises:
        UpstreamError: the upstream failed and no list younger than `stale_max_age` exists.
    """
    upstream = route.upstream
    try:
        document = get_document(
            "oci-referrers",
            f"{upstream.id}:{route.repository}@{digest}",
            lambda: json.dumps(_fetch(route, digest)).encode(),
            ttl=upstream.tag_ttl,
            stale_max_age=upstream.stale_max_age,
        )
    except _NothingToKeep:
        return Referrers([], "MISS")
    descriptors = json.loads(document.body)
    if artifact_type is not None:
        descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
    return Referrers(descriptors, document.cache)


def _fetch(route: Route, digest: str) -> list[dict[str, Any]]:
    client = client_for(route.upstream)
    try:
        return _from_api(client, route, digest)
    except UpstreamNotFound:
        return _from_tag(client, route, digest)


def _from_api(client: UpstreamClient, route: Route, digest: str) -> list[dict[str, Any]]:
    """The upstream's referrers list, all pages (UpstreamNotFound: it has no such API)."""
    path = f"/v2/{route.repository}/referrers/{digest}"
    found: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        response = client.fetch(
            "GET", path, headers={"Accept": OCI_INDEX}, scope=manifests.scope(route)
        )
        parsed = parse_manifest(response.content, response.headers.get("Content-Type", ""))
        if parsed.media_type != OCI_INDEX:
            raise UpstreamInvalid(f"upstream referrers list is a {parsed.media_type}")
        found.extend(parsed.descriptors)
        if (next_page := _NEXT.search(response.headers.get("Link", ""))) is None:
            return found
        path = next_page.group(1)
    raise UpstreamInvalid(f"upstream referrers list has more than {MAX_PAGES} pages")


def _from_tag(client: UpstreamClient, route: Route, digest: str) -> list[dict[str, Any]]:
    """The index under the referrers tag; no referrers when there is none or it is not a
    valid OCI index (as the spec tells clients to assume)."""
    try:
        response = client.fetch(
            "GET",
            manifests.path(route, referrers_tag(digest)),
            headers={"Accept": OCI_INDEX},
            scope=manifests.scope(route),
            cap=MAX_MANIFEST,
        )
    except UpstreamNotFound:
        if links.is_linked(route, digest, MANIFEST):
            return []
        raise _NothingToKeep(digest) from None
    try:
        parsed = parse_manifest(response.content, response.headers.get("Content-Type", ""))
    except UpstreamInvalid:
        return []
    return list(parsed.descriptors) if parsed.media_type == OCI_INDEX else []
