"""Manifests by tag: what the upstream answered for a tag, kept per negotiated set of manifest
types (a client asking for single manifests never changes what an index-aware client gets),
trusted for the upstream's TTL, revalidated with HEAD, served stale when the upstream fails
or when its rate-limit budget is low (mirror/budgets.py: new content gets what is left).
Concurrent misses of one (tag, accepted types) cause one upstream request. Every upstream
answer for a tag is kept in its history (TagHistory); an operator's pin (TagPin) answers
instead of the upstream until it is removed (registries/freshness.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from mirror import budgets, singleflight, stats
from mirror.digests import InvalidDigest, parse_digest
from mirror.errors import UpstreamError, UpstreamInvalid, UpstreamNotFound
from mirror.http import client_for
from mirror.memo import Memo

from . import links, manifests, pins
from .formats import MANIFEST, MANIFEST_TYPES, accept_key, media_type_of, upstream_accept
from .manifests import ManifestAnswer
from .models import Manifest, Tag, TagHistory
from .routing import Route


def by_tag(
    route: Route, name: str, accept: list[str], head: bool, *, revalidate: bool = False
) -> ManifestAnswer:
    """Answer a manifest request (GET or HEAD) by tag; `revalidate` asks the upstream now
    even within the tag's TTL (a refresh). A pinned tag answers its pin, never asking the
    upstream for the tag.

    Raises:
        UpstreamNotFound: the upstream does not have the tag (its cached answer is dropped).
        UpstreamError: the upstream failed and no answer younger than `stale_max_age` exists.
    """
    key = accept_key(accept)
    pinned = pins.pinned(route.upstream.id, route.repository, name)
    memo_key = (route.upstream.id, route.repository, name, key)
    if not pinned and not revalidate and (known := _warm.get(memo_key)) is not None:
        return _from_memo(known, head)
    tag = _cached(route, name, key)
    if pinned:
        return _pinned_answer(route, tag, pinned, head)
    cache = "HIT"
    if tag is None or revalidate or not _fresh(route, tag):
        if tag is not None and not revalidate and _saving_budget(route, tag):
            cache = "STALE"  # the upstream's rate-limit budget is kept for new content
        else:
            try:
                tag, cache = _ask(route, name, accept, tag, head, revalidate=revalidate)
            except UpstreamNotFound:
                raise
            except UpstreamError:
                if tag is None or not _within_stale_max_age(route, tag):
                    raise
                cache = "STALE"
    if head:
        return ManifestAnswer(tag.digest, tag.media_type, tag.size, None, cache)
    manifest = manifests.stored(tag.digest)
    if manifest is None:  # known from a HEAD only: fetch it by digest now
        manifest, cache = manifests.fetch_by_digest(route, tag.digest), "MISS"
        if (tag.media_type, tag.size) != (manifest.media_type, manifest.size):
            Tag.objects.filter(pk=tag.pk).update(media_type=manifest.media_type, size=manifest.size)
    if cache != "STALE":
        _remember(memo_key, route, tag, manifest)
    _count(tag.pk, tag.repository_id, manifest.digest)
    return manifests.answer(manifest, cache, head=False)


@dataclass(frozen=True)
class _Known:
    """A tag's warm answer: what a HEAD and a GET return, and the rows a GET counts."""

    head: ManifestAnswer
    get: ManifestAnswer
    tag_id: int
    repository_id: int


# Warm answers by (upstream, repository, tag, accept key), so that a warm request costs no
# query: kept while the tag is fresh, at most MIRROR_UPSTREAM_CACHE_SECONDS (the time within
# which other processes' changes apply), cleared by `forget` after a change in this process.
_warm = Memo(maxsize=4096)
MEMO_MAX_BODY = 256 * 1024


def forget() -> None:
    """Drop the warm answers (a tag or repository was purged, pinned or refreshed here)."""
    _warm.clear()


def _remember(
    memo_key: tuple[int, str, str, str], route: Route, tag: Tag, manifest: Manifest
) -> None:
    if manifest.size > MEMO_MAX_BODY:
        return
    fresh_for = route.upstream.tag_ttl - (timezone.now() - tag.fetched_at).total_seconds()
    get = manifests.answer(manifest, "HIT", head=False)
    head = ManifestAnswer(tag.digest, tag.media_type, tag.size, None, "HIT")
    seconds = min(fresh_for, settings.MIRROR_UPSTREAM_CACHE_SECONDS)
    _warm.put(memo_key, _Known(head, get, tag.pk, tag.repository_id), seconds)


def _from_memo(known: _Known, head: bool) -> ManifestAnswer:
    if head:
        return known.head
    _count(known.tag_id, known.repository_id, known.get.digest)
    return known.get


def _count(tag_id: int, repository_id: int, digest: str) -> None:
    stats.record("registries.Tag", pk=tag_id)
    stats.record("registries.Repository", pk=repository_id)
    stats.record("registries.Manifest", digest=digest)


def revalidate(route: Route, name: str, accept: list[str]) -> Tag:
    """Ask the upstream now what the tag points to for these types (with HEAD when it can),
    pinned or not, and record the answer: the "upstream current" digest of a pinned tag.

    Raises:
        UpstreamNotFound: the upstream does not have the tag (its cached answer is dropped).
        UpstreamError: the upstream failed; nothing changed.
    """
    tag = _cached(route, name, accept_key(accept))
    return _ask(route, name, accept, tag, True, revalidate=True)[0]


def _ask(
    route: Route, name: str, accept: list[str], tag: Tag | None, head: bool, *, revalidate: bool
) -> tuple[Tag, str]:
    """The upstream's answer for the tag, once for concurrent callers; a tag the upstream
    no longer has is dropped (UpstreamNotFound)."""
    key = accept_key(accept)
    # A revalidation only takes another caller's answer if it was got after this call began.
    since = timezone.now() if revalidate else None
    try:
        return singleflight.once(
            f"oci-tag:{route.upstream.id}:{route.repository}:{name}:{key}",
            # Another process may have finished the same refresh since `_cached`.
            lambda: _recheck(route, name, key, since) or _refresh(route, name, accept, tag, head),
            recheck=lambda: _recheck(route, name, key, since),
        )
    except UpstreamNotFound:
        if tag is not None:
            Tag.objects.filter(pk=tag.pk).delete()
        raise


def _cached(route: Route, name: str, key: str) -> Tag | None:
    return Tag.objects.filter(
        repository__upstream_id=route.upstream.id,
        repository__name=route.repository,
        name=name,
        accept_key=key,
    ).first()


def _pinned_answer(route: Route, tag: Tag | None, digest: str, head: bool) -> ManifestAnswer:
    """The pinned manifest, by digest (stored, or fetched under this name)."""
    answer = manifests.by_digest(route, digest, head)
    if tag is not None and not head:
        stats.record("registries.Tag", pk=tag.pk)
    return answer


def _fresh(route: Route, tag: Tag) -> bool:
    return timezone.now() - tag.fetched_at < dt.timedelta(seconds=route.upstream.tag_ttl)


def _within_stale_max_age(route: Route, tag: Tag) -> bool:
    return timezone.now() - tag.fetched_at < dt.timedelta(seconds=route.upstream.stale_max_age)


def _saving_budget(route: Route, tag: Tag) -> bool:
    """Serve this expired tag as it is: the upstream's budget is low (mirror/budgets.py) and
    the tag is young enough to be served stale. Asked only of expired tags, never on hits."""
    return _within_stale_max_age(route, tag) and budgets.is_low(route.upstream.id)


def _recheck(
    route: Route, name: str, key: str, since: dt.datetime | None = None
) -> tuple[Tag, str] | None:
    """What a leader in another process stored, if it is fresh (and confirmed after `since`)."""
    tag = _cached(route, name, key)
    if tag is None or not _fresh(route, tag) or (since is not None and tag.fetched_at < since):
        return None
    return tag, "HIT"


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
            _seen(tag.repository_id, name, digest, tag.fetched_at)
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
    now = timezone.now()
    tag, _ = Tag.objects.update_or_create(
        repository=links.repository(route),
        name=name,
        accept_key=accept_key(accept),
        defaults={
            "digest": manifest.digest,
            "media_type": manifest.media_type,
            "size": manifest.size,
            "fetched_at": now,
        },
    )
    _seen(tag.repository_id, name, manifest.digest, now)
    return tag


def _seen(repository_id: int, name: str, digest: str, when: dt.datetime) -> None:
    """Record in the tag's history that the upstream confirmed `digest` now: one UPDATE,
    or an INSERT the first time (a concurrent first insert wins; both saw it now)."""
    history = TagHistory.objects.filter(repository_id=repository_id, name=name, digest=digest)
    if not history.update(last_seen=when):
        TagHistory.objects.bulk_create(
            [
                TagHistory(
                    repository_id=repository_id,
                    name=name,
                    digest=digest,
                    first_seen=when,
                    last_seen=when,
                )
            ],
            ignore_conflicts=True,
        )
