"""Manifests by tag: what the upstream answered for a tag, kept per negotiated set of manifest
types (a client asking for single manifests never changes what an index-aware client gets),
trusted for the upstream's TTL, revalidated with HEAD, served stale when the upstream fails.
Concurrent misses of one (tag, accepted types) cause one upstream request.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from mirror import singleflight, stats
from mirror.digests import InvalidDigest, parse_digest
from mirror.errors import UpstreamError, UpstreamInvalid, UpstreamNotFound
from mirror.http import client_for

from . import links, manifests
from .formats import MANIFEST, MANIFEST_TYPES, accept_key, media_type_of, upstream_accept
from .manifests import ManifestAnswer
from .models import Manifest, Tag
from .routing import Route


def by_tag(
    route: Route, name: str, accept: list[str], head: bool, *, revalidate: bool = False
) -> ManifestAnswer:
    """Answer a manifest request (GET or HEAD) by tag; `revalidate` asks the upstream now
    even within the tag's TTL (a refresh).

    Raises:
        UpstreamNotFound: the upstream does not have the tag (its cached answer is dropped).
        UpstreamError: the upstream failed and no answer younger than `stale_max_age` exists.
    """
    key = accept_key(accept)
    tag = _cached(route, name, key)
    cache = "HIT"
    if tag is None or revalidate or not _fresh(route, tag):
        try:
            tag, cache = singleflight.once(
                f"oci-tag:{route.upstream.id}:{route.repository}:{name}:{key}",
                # Another process may have finished the same refresh since `_cached`.
                lambda: _recheck(route, name, key) or _refresh(route, name, accept, tag, head),
                recheck=lambda: _recheck(route, name, key),
            )
        except UpstreamNotFound:
            if tag is not None:
                Tag.objects.filter(pk=tag.pk).delete()
            raise
        except UpstreamError:
            max_age = dt.timedelta(seconds=route.upstream.stale_max_age)
            if tag is None or timezone.now() - tag.fetched_at >= max_age:
                raise
            cache = "STALE"
    if head:
        return ManifestAnswer(tag.digest, tag.media_type, tag.size, None, cache)
    manifest = manifests.stored(tag.digest)
    if manifest is None:  # known from a HEAD only: fetch it by digest now
        manifest, cache = manifests.fetch_by_digest(route, tag.digest), "MISS"
        if (tag.media_type, tag.size) != (manifest.media_type, manifest.size):
            Tag.objects.filter(pk=tag.pk).update(media_type=manifest.media_type, size=manifest.size)
    stats.record("registries.Tag", pk=tag.pk)
    stats.record("registries.Repository", pk=tag.repository_id)
    stats.record("registries.Manifest", digest=manifest.digest)
    return manifests.answer(manifest, cache, head=False)


def _cached(route: Route, name: str, key: str) -> Tag | None:
    return Tag.objects.filter(
        repository__upstream_id=route.upstream.id,
        repository__name=route.repository,
        name=name,
        accept_key=key,
    ).first()


def _fresh(route: Route, tag: Tag) -> bool:
    return timezone.now() - tag.fetched_at < dt.timedelta(seconds=route.upstream.tag_ttl)


def _recheck(route: Route, name: str, key: str) -> tuple[Tag, str] | None:
    """What a leader in another process stored, if it is fresh."""
    tag = _cached(route, name, key)
    return (tag, "HIT") if tag is not None and _fresh(route, tag) else None


def _refresh(
    route: Route, name: str, accept: list[str], tag: Tag | None, head: bool
) -> tuple[Tag, str]:
    """Revalidate a known tag with HEAD, or learn it from the upstream."""
    if tag is not None or head:
        response = client_for(route.upstream).fetch(
            "HEAD",
            manifests.path(route, name),
            headers={"Accept": upstream_accept(accept)},
            scope=manifests.scope(route),
        )
        digest = _header_digest(response.headers.get("Docker-Content-Digest", ""))
        if tag is not None and digest == tag.digest:
            tag.fetched_at = timezone.now()
            Tag.objects.filter(pk=tag.pk).update(fetched_at=tag.fetched_at)
            return tag, "HIT"
        if head and digest:
            if (manifest := manifests.stored(digest)) is not None:
                links.link_manifest(route, manifest)
                return _save(route, name, accept, manifest), "MISS"
            media_type = media_type_of(response.headers.get("Content-Type", ""))
            size = response.headers.get("Content-Length", "")
            if media_type in MANIFEST_TYPES and size.isascii() and size.isdigit():
                links.link(route, [(digest, MANIFEST)])
                learned = Manifest(digest=digest, media_type=media_type, size=int(size))
                return _save(route, name, accept, learned), "MISS"
        # No usable digest, a new one for a GET, or an odd HEAD: GET the manifest itself.
    return _save(route, name, accept, manifests.fetch(route, name, accept)), "MISS"


def _header_digest(value: str) -> str:
    """The digest an upstream HEAD named ('' for none); a malformed one is an upstream fault
    (the cached tag is then served stale, never dropped)."""
    if not value:
        return ""
    try:
        parse_digest(value)
    except InvalidDigest as e:
        raise UpstreamInvalid(f"upstream sent a bad Docker-Content-Digest: {e}") from None
    return value


def _save(route: Route, name: str, accept: list[str], manifest: Manifest) -> Tag:
    """Record the tag's answer: a stored manifest, or (from a HEAD) an unsaved description."""
    tag, _ = Tag.objects.update_or_create(
        repository=links.repository(route),
        name=name,
        accept_key=accept_key(accept),
        defaults={
            "digest": manifest.digest,
            "media_type": manifest.media_type,
            "size": manifest.size,
            "fetched_at": timezone.now(),
        },
    )
    return tag
