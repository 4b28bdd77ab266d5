"""Manifests: by digest immutable; by tag cached for the upstream's TTL, revalidated with HEAD,
served stale when the upstream fails.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from mirror import stats
from mirror.digests import digest_of, parse_digest
from mirror.errors import DigestMismatch, UpstreamError, UpstreamNotFound
from mirror.http import client_for

from .errors import RegistryError
from .models import Manifest, Repository, Tag
from .names import is_digest
from .routing import Route

MAX_MANIFEST = 4 * 1024 * 1024  # distribution's limit
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass
class ManifestAnswer:
    digest: str
    media_type: str
    size: int
    body: bytes | None  # None for HEAD
    cache: str  # HIT | MISS | STALE


def _accepts(accept: list[str], media_type: str) -> bool:
    return not accept or media_type in accept or "*/*" in accept


def _scope(route: Route) -> str:
    return f"repository:{route.repository}:pull"


def _upstream_headers(accept: list[str]) -> dict[str, str]:
    """The client's whole Accept list; a client naming no manifest type at all (`*/*`, or
    nothing) accepts any, and registries answer such a list with legacy schema 1 or 404."""
    if not any(media_type in MANIFEST_TYPES for media_type in accept):
        accept = [*MANIFEST_TYPES, *accept]
    return {"Accept": ", ".join(accept)}


def get_manifest(route: Route, reference: str, accept: list[str], head: bool) -> ManifestAnswer:
    """Answer a manifest request (GET or HEAD) by tag or digest."""
    if is_digest(reference):
        answer = _by_digest(route, reference, head)
    else:
        answer = _by_tag(route, reference, accept, head)
    if not head:
        stats.record("registries.Manifest", digest=answer.digest)
    return answer


def _by_digest(route: Route, digest: str, head: bool) -> ManifestAnswer:
    manifest = Manifest.objects.filter(digest=digest).first()
    cache = "HIT"
    if manifest is None:
        try:
            manifest = _fetch(route, digest, [], expect=digest)
        except UpstreamNotFound:
            raise RegistryError(
                "MANIFEST_UNKNOWN", "manifest unknown", {"digest": digest}
            ) from None
        cache = "MISS"
    _count_repository(route)
    body = None if head else bytes(manifest.body)
    return ManifestAnswer(digest, manifest.media_type, manifest.size, body, cache)


def _by_tag(route: Route, tag_name: str, accept: list[str], head: bool) -> ManifestAnswer:
    tag = (
        Tag.objects.filter(
            repository__upstream_id=route.upstream.id,
            repository__name=route.repository,
            name=tag_name,
        )
        .select_related("repository")
        .first()
    )
    usable = tag is not None and _accepts(accept, tag.media_type)
    now = timezone.now()
    cache = "HIT"
    try:
        if not (usable and now - tag.fetched_at < dt.timedelta(seconds=route.upstream.tag_ttl)):
            tag, cache = _refresh_tag(route, tag_name, accept, tag if usable else None, head)
    except UpstreamNotFound:
        Tag.objects.filter(pk=getattr(tag, "pk", None)).delete()
        raise RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {"tag": tag_name}) from None
    except UpstreamError:
        max_age = dt.timedelta(seconds=route.upstream.stale_max_age)
        if not (usable and now - tag.fetched_at < max_age):
            raise
        cache = "STALE"
    body = None
    if not head:
        manifest = Manifest.objects.filter(digest=tag.digest).first()
        if manifest is None:  # known from a HEAD only: fetch it by digest now
            try:
                manifest = _fetch(route, tag.digest, [], expect=tag.digest)
            except UpstreamNotFound:
                raise RegistryError(
                    "MANIFEST_UNKNOWN", "manifest unknown", {"tag": tag_name}
                ) from None
            cache = "MISS"
        body = bytes(manifest.body)
        stats.record("registries.Tag", pk=tag.pk)
        stats.record("registries.Repository", pk=tag.repository_id)
    return ManifestAnswer(tag.digest, tag.media_type, tag.size, body, cache)


def _refresh_tag(
    route: Route, tag_name: str, accept: list[str], tag: Tag | None, head: bool
) -> tuple[Tag, str]:
    """Revalidate a known tag with HEAD, or learn it from the upstream."""
    client = client_for(route.upstream)
    path = f"/v2/{route.repository}/manifests/{tag_name}"
    headers = _upstream_headers(accept)
    if tag is not None or head:
        response = client.send("HEAD", path, headers=headers, scope=_scope(route))
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        size = response.headers.get("Content-Length", "")
        if tag is not None and digest == tag.digest:
            Tag.objects.filter(pk=tag.pk).update(fetched_at=timezone.now())
            return tag, "HIT"
        if head and digest and media_type and size.isdigit():
            _valid_digest(digest)
            return _save_tag(route, tag_name, digest, media_type, int(size)), "MISS"
    manifest = _fetch(route, tag_name, accept)
    return _save_tag(route, tag_name, manifest.digest, manifest.media_type, manifest.size), "MISS"


def _valid_digest(digest: str) -> None:
    try:
        parse_digest(digest)
    except ValueError as e:
        raise UpstreamNotFound(f"upstream sent a bad digest: {e}") from None


def _fetch(route: Route, reference: str, accept: list[str], expect: str = "") -> Manifest:
    """GET a manifest from the upstream, verify it, store it."""
    client = client_for(route.upstream)
    response = client.send(
        "GET",
        f"/v2/{route.repository}/manifests/{reference}",
        headers=_upstream_headers(accept),
        scope=_scope(route),
        stream=True,
    )
    try:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_MANIFEST:
                raise RegistryError("MANIFEST_INVALID", "upstream manifest too large", status=502)
    finally:
        response.close()
    body = bytes(body)
    header_digest = response.headers.get("Docker-Content-Digest", "")
    algorithm = parse_digest(expect)[0] if expect else "sha256"
    digest = digest_of(body, algorithm)
    if (expect and digest != expect) or (
        header_digest.startswith(f"{algorithm}:") and header_digest != digest
    ):
        raise RegistryError(
            "MANIFEST_INVALID", "upstream manifest does not match its digest", status=502
        ) from DigestMismatch(digest)
    media_type = _media_type(response.headers.get("Content-Type", ""), body)
    with transaction.atomic():
        manifest, _ = Manifest.objects.get_or_create(
            digest=digest, defaults={"media_type": media_type, "size": len(body), "body": body}
        )
    return manifest


def _media_type(content_type: str, body: bytes) -> str:
    media_type = content_type.split(";")[0].strip()
    if media_type and media_type not in ("application/json", "text/plain"):
        return media_type
    try:
        return str(json.loads(body).get("mediaType") or "application/json")
    except (ValueError, AttributeError):
        return "application/json"


def _repository(route: Route) -> Repository:
    try:
        with transaction.atomic():
            repo, _ = Repository.objects.get_or_create(
                upstream_id=route.upstream.id, name=route.repository
            )
    except IntegrityError:
        repo = Repository.objects.get(upstream_id=route.upstream.id, name=route.repository)
    return repo


def _count_repository(route: Route) -> None:
    repo = _repository(route)
    stats.record("registries.Repository", pk=repo.pk)


def _save_tag(route: Route, name: str, digest: str, media_type: str, size: int) -> Tag:
    repo = _repository(route)
    tag, _ = Tag.objects.update_or_create(
        repository=repo,
        name=name,
        defaults={
            "digest": digest,
            "media_type": media_type,
            "size": size,
            "fetched_at": timezone.now(),
        },
    )
    return tag
