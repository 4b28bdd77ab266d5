"""Freshness control of the OCI cache, for operators (REST API and admin): what a tag pointed
to upstream over time, pins, "refresh now", and purging a tag or a whole repository.

- A tag is one name in a repository; the cache keeps one row per set of accepted manifest
  types (registries/tags.py), which operators act on together.
- A pin answers clients with its digest instead of the tag's (tags.by_tag); it is accepted only
  for a digest the tag's history, the repository's links or the upstream know in that
  repository, so that a pin never serves content the upstream did not confirm under the name.
- Refreshing marks cached answers expired (the next pull revalidates them, and still falls
  back to them when the upstream fails) or revalidates a tag at once.
- Purging forgets a tag (its rows, pin and history) or a repository (also its links and
  tags/list answers, and the manifests and blobs no other repository links). A blob whose
  fill holds a live lease is left alone: it is being written, and purging it would break
  that fill's readers.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Least
from django.utils import timezone

from mirror import documents, eviction, leases
from mirror.digests import InvalidDigest, parse_digest, storage_key
from mirror.errors import MirrorError, UpstreamDenied, UpstreamInvalid, UpstreamNotFound
from mirror.upstreams import upstreams_of_kind

from . import links, manifests, pins, routing, tags
from .formats import BLOB, MANIFEST
from .models import Link, Manifest, Repository, Tag, TagHistory, TagPin
from .routing import Route

log = logging.getLogger(__name__)


class PinRefused(ValueError):
    """The digest cannot be pinned (the message says why; an API 400)."""


@dataclass(frozen=True)
class RepositoryPurge:
    """What purging a repository removed."""

    tags: int
    manifests: int
    blobs: int
    blobs_in_use: int  # unshared blobs left alone because a fill is writing them


def route_of(repository: Repository) -> Route | None:
    """The route of a cached repository (None when its upstream is gone)."""
    for upstream in upstreams_of_kind("oci", include_disabled=True):
        if upstream.id == repository.upstream_id:
            return Route(upstream, repository.name)
    return None


def upstream_digest(repository: Repository, name: str) -> str | None:
    """The digest the upstream last confirmed for the tag (whatever a pin serves)."""
    latest = TagHistory.objects.filter(repository=repository, name=name).order_by("-last_seen")
    digest = latest.values_list("digest", flat=True).first()
    if digest is None:  # cached before tags had a history
        rows = Tag.objects.filter(repository=repository, name=name).order_by("-fetched_at")
        digest = rows.values_list("digest", flat=True).first()
    return digest


# -- pins ----------------------------------------------------------------------------------


def pin(repository: Repository, name: str, digest: str, by: str = "") -> TagPin:
    """Pin the tag to `digest`; raises PinRefused unless that digest is known in this
    repository (asking the upstream if need be)."""
    check_pin(repository, digest)
    row, _ = TagPin.objects.update_or_create(
        repository=repository, name=name, defaults={"digest": digest, "pinned_by": by[:150]}
    )
    pins.forget()
    tags.forget()
    log.info("tag %s:%s pinned to %s by %s", repository, name, digest, by or "?")
    return row


def unpin(repository: Repository, name: str) -> bool:
    """Remove the tag's pin; False when it had none."""
    removed = TagPin.objects.filter(repository=repository, name=name).delete()[0] > 0
    pins.forget()
    tags.forget()
    if removed:
        log.info("tag %s:%s unpinned", repository, name)
    return removed


def check_pin(repository: Repository, digest: str) -> None:
    """Raise PinRefused unless `digest` is a manifest digest known in this repository: in a
    tag's history, linked, or confirmed by the upstream now (which links it). An upstream
    that cannot answer now refuses the pin too (saying so): a pin is never a guess."""
    try:
        parse_digest(digest)
    except InvalidDigest as e:
        raise PinRefused(str(e)) from None
    if TagHistory.objects.filter(repository=repository, digest=digest).exists():
        return
    if Link.objects.filter(repository=repository, digest=digest, kind=MANIFEST).exists():
        return
    route = route_of(repository)
    if route is None:
        raise PinRefused(f"{digest} is not known in {repository.name}")
    try:  # links it on success: the pin is then served like any digest of the repository
        manifests.by_digest(route, digest, head=True)
    except MirrorError as e:
        known = not isinstance(e, (UpstreamNotFound, UpstreamDenied, UpstreamInvalid))
        why = "cannot be confirmed now" if known else "is not known"
        raise PinRefused(f"{digest} {why} in {repository.name} upstream ({e})") from None


# -- refresh -------------------------------------------------------------------------------


def refresh_tag(repository: Repository, name: str, *, now: bool) -> int:
    """Revalidate the tag's cached answers with the upstream now (`now`), or mark them
    expired so the next pull does. Returns how many cached answers it concerned.

    Raises (with `now`):
        UpstreamNotFound: the upstream no longer has the tag (its cached answers are dropped).
        UpstreamError: the upstream failed; nothing changed.
    """
    route = route_of(repository)
    rows = Tag.objects.filter(repository=repository, name=name)
    if route is None:
        return 0
    if not now:
        return _expire(rows, route)
    keys = [key for key in rows.values_list("accept_key", flat=True) if key] or ["*"]
    for key in keys:
        tags.revalidate(route, name, [] if key == "*" else key.split(","))
    tags.forget()
    return len(keys)


def refresh_repository(repository: Repository) -> int:
    """Mark every cached tag of the repository (and its tags/list answers) expired; returns
    how many cached answers were marked."""
    route = route_of(repository)
    if route is None:
        return 0
    documents.purge("oci-tags", key_prefix=_tags_list_prefix(repository))
    return _expire(Tag.objects.filter(repository=repository), route)


def _expire(rows: QuerySet[Tag], route: Route) -> int:
    """Back-date the rows' confirmation to just past the TTL: the next pull revalidates, and
    the answer can still be served stale (within stale_max_age) if the upstream fails."""
    expired = timezone.now() - dt.timedelta(seconds=route.upstream.tag_ttl + 1)
    count = rows.update(fetched_at=Least(F("fetched_at"), expired))
    tags.forget()
    return count


def _tags_list_prefix(repository: Repository) -> str:
    """The key prefix of the repository's tags/list documents (registries/catalog.py)."""
    return f"{repository.upstream_id}:{repository.name}?"


# -- purge ---------------------------------------------------------------------------------


def purge_tag(repository: Repository, name: str) -> int:
    """Forget the tag: its cached answers, pin and history (the manifests stay, linked to
    the repository). Returns how many cached answers were removed."""
    with transaction.atomic():
        removed = Tag.objects.filter(repository=repository, name=name).delete()[0]
        TagPin.objects.filter(repository=repository, name=name).delete()
        TagHistory.objects.filter(repository=repository, name=name).delete()
    pins.forget()
    tags.forget()
    log.info("tag %s:%s purged", repository, name)
    return removed


def purge_repository(repository: Repository) -> RepositoryPurge:
    """Forget the repository and what only it holds: the next pull fetches everything anew."""
    with transaction.atomic():
        linked = set(Link.objects.filter(repository=repository).values_list("digest", "kind"))
        tag_count = Tag.objects.filter(repository=repository).values("name").distinct().count()
        documents.purge("oci-tags", key_prefix=_tags_list_prefix(repository))
        repository.delete()  # links, tags, pins and history go with it
        links.forget(repository.upstream_id, repository.name)
        digests = {digest for digest, _ in linked}
        shared = set(Link.objects.filter(digest__in=digests).values_list("digest", "kind"))
        alone = linked - shared
        manifest_count = Manifest.objects.filter(
            digest__in=[d for d, k in alone if k == MANIFEST]
        ).delete()[0]
    pins.forget()
    tags.forget()
    blob_digests = [d for d, k in alone if k == BLOB]
    deleted, in_use = _delete_blobs(repository, blob_digests)
    log.info(
        "repository %s purged: %d tags, %d manifests, %d blobs (%d in use, kept)",
        repository,
        tag_count,
        manifest_count,
        deleted,
        in_use,
    )
    return RepositoryPurge(tag_count, manifest_count, deleted, in_use)


def _delete_blobs(repository: Repository, digests: list[str]) -> tuple[int, int]:
    """Delete the blobs from the index and storage, except those a fill is writing, as one
    recorded purge (mirror/eviction.py); returns (deleted, left in use)."""
    live = leases.live_keys() if digests else set()
    keys = [storage_key(digest) for digest in digests]
    free = [key for key in keys if key not in live]
    route = route_of(repository)
    name = routing.client_name(route.upstream, repository.name) if route else repository.name
    deleted = eviction.delete_objects(
        free, kind="image", reference=name, upstream_id=repository.upstream_id
    )
    return deleted, len(keys) - len(free)
