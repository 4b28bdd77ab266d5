"""Manifests by digest: immutable, stored in the database once verified and validated, served
under a name only once the upstream confirmed it there (registries/links.py)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from mirror import singleflight, stats
from mirror.digests import digest_of, parse_digest
from mirror.errors import UpstreamInvalid
from mirror.http import client_for

from . import links
from .formats import MANIFEST, MAX_MANIFEST, parse_manifest, upstream_accept
from .models import Manifest
from .routing import Route


@dataclass
class ManifestAnswer:
    digest: str
    media_type: str
    size: int
    body: bytes | None  # None for HEAD
    cache: str  # HIT | MISS | STALE


def scope(route: Route) -> str:
    return f"repository:{route.repository}:pull"


def path(route: Route, reference: str) -> str:
    return f"/v2/{route.repository}/manifests/{reference}"


def answer(manifest: Manifest, cache: str, head: bool) -> ManifestAnswer:
    """A GET's answer is always the stored manifest: its own type, size and body."""
    body = None if head else bytes(manifest.body)
    return ManifestAnswer(manifest.digest, manifest.media_type, manifest.size, body, cache)


def stored(digest: str) -> Manifest | None:
    return Manifest.objects.filter(digest=digest).first()


def by_digest(route: Route, digest: str, head: bool) -> ManifestAnswer:
    """A manifest by digest: from the database when linked to this name, else confirmed by
    the upstream (HEAD) or fetched from it.

    Raises:
        UpstreamNotFound: the upstream does not have it under this name.
    """
    manifest = stored(digest)
    cache = "HIT"
    if manifest is None:
        manifest, cache = fetch_by_digest(route, digest), "MISS"
    elif not links.is_linked(route, digest, MANIFEST):
        _confirm(route, manifest)
    stats.record("registries.Repository", upstream_id=route.upstream.id, name=route.repository)
    if not head:
        stats.record("registries.Manifest", digest=digest)
    return answer(manifest, cache, head)


def _confirm(route: Route, manifest: Manifest) -> None:
    """Ask the upstream whether this name holds a manifest we have; link it if so."""

    def ask() -> bool:
        headers = {"Accept": upstream_accept([])}
        client_for(route.upstream).fetch(
            "HEAD", path(route, manifest.digest), headers=headers, scope=scope(route)
        )
        links.link_manifest(route, manifest)
        return True

    singleflight.once(
        f"oci-confirm:{route.upstream.id}:{route.repository}:manifest:{manifest.digest}",
        ask,
        recheck=lambda: links.is_linked(route, manifest.digest, MANIFEST) or None,
    )


def fetch_by_digest(route: Route, digest: str) -> Manifest:
    """GET a manifest by digest, once for concurrent callers asking under this name."""

    def linked() -> Manifest | None:
        return stored(digest) if links.is_linked(route, digest, MANIFEST) else None

    return singleflight.once(
        f"oci-manifest:{route.upstream.id}:{route.repository}:{digest}",
        # Another process may have stored it since the caller looked.
        lambda: linked() or fetch(route, digest, [], expect=digest),
        recheck=linked,
    )


def fetch(route: Route, reference: str, accept: list[str], expect: str = "") -> Manifest:
    """GET a manifest from the upstream; verify its digest, validate it, store and link it.

    Raises:
        UpstreamInvalid: over the size cap, a digest mismatch, or not a valid manifest of a
            type this registry serves; nothing is stored.
    """
    response = client_for(route.upstream).fetch(
        "GET",
        path(route, reference),
        headers={"Accept": upstream_accept(accept)},
        scope=scope(route),
        cap=MAX_MANIFEST,
    )
    body = response.content
    header_digest = response.headers.get("Docker-Content-Digest", "")
    algorithm = parse_digest(expect)[0] if expect else "sha256"
    digest = digest_of(body, algorithm)
    if (expect and digest != expect) or (
        header_digest.startswith(f"{algorithm}:") and header_digest != digest
    ):
        raise UpstreamInvalid(f"upstream manifest does not match its digest ({digest})")
    parsed = parse_manifest(body, response.headers.get("Content-Type", ""))
    with transaction.atomic():
        manifest, _ = Manifest.objects.get_or_create(
            digest=digest,
            defaults={"media_type": parsed.media_type, "size": len(body), "body": body},
        )
    links.link_manifest(route, manifest, parsed)
    return manifest
