"""Links (upstream, repository) -> digest: what the upstream confirmed a repository holds.

Content is stored once by digest but served under a name only through a link, made from what
the upstream answered for that name:
- a manifest it served (or answered 200 for): the manifest, and what it references (config and
  layers as blobs, an index's children as manifests; children already stored bring their own
  references). A manifest's `subject` is not linked: the spec lets it name a manifest that is
  not in the repository.
- a blob it answered 200 for under that name.
A repository row is written with its first link, never for a name the upstream has not
confirmed. Links are not removed when the upstream deletes content (that is no reason to stop
serving what it once confirmed, as with a cached tag); an operator's purge removes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from mirror.errors import UpstreamInvalid

from .formats import MANIFEST, Parsed, parse_manifest
from .models import Link, Manifest, Repository
from .routing import Route

# Confirmed links seen by this process: a warm request checks its link without a query.
# Only a purge removes links (`forget`, in the purging process; another process may go on
# believing a purged link, which only means it asks the upstream for content under a name the
# upstream once confirmed); the set (some 300 bytes an entry) is cleared when full, and
# refills at one indexed query per link.
_KNOWN_MAX = 20_000
_known: set[tuple[int, str, str, str]] = set()
_lock = threading.Lock()


def _remember(keys: Iterable[tuple[int, str, str, str]]) -> None:
    with _lock:
        if len(_known) > _KNOWN_MAX:
            _known.clear()
        _known.update(keys)


def forget(upstream_id: int, name: str) -> None:
    """Drop this process's memory of a purged repository's links."""
    with _lock:
        _known.difference_update([k for k in _known if k[:2] == (upstream_id, name)])


def is_linked(route: Route, digest: str, kind: str) -> bool:
    """Whether the upstream confirmed `digest` under this name (one indexed query at most)."""
    key = (route.upstream.id, route.repository, digest, kind)
    if key in _known:
        return True
    found = Link.objects.filter(
        repository__upstream_id=route.upstream.id,
        repository__name=route.repository,
        digest=digest,
        kind=kind,
    ).exists()
    if found:
        _remember([key])
    return found


def repository(route: Route) -> Repository:
    """The repository row of a confirmed name (created on first use)."""
    try:
        with transaction.atomic():
            repo, _ = Repository.objects.get_or_create(
                upstream_id=route.upstream.id, name=route.repository
            )
    except IntegrityError:  # created concurrently
        repo = Repository.objects.get(upstream_id=route.upstream.id, name=route.repository)
    return repo


def link(route: Route, refs: Iterable[tuple[str, str]]) -> Repository:
    """Record that the upstream confirmed each (digest, kind) under this name."""
    refs = set(refs)
    repo = repository(route)
    Link.objects.bulk_create(
        [Link(repository=repo, digest=digest, kind=kind) for digest, kind in refs],
        ignore_conflicts=True,
    )
    _remember((route.upstream.id, route.repository, digest, kind) for digest, kind in refs)
    return repo


def link_manifest(route: Route, manifest: Manifest, parsed: Parsed | None = None) -> Repository:
    """Link a manifest the upstream confirmed under this name, and what it references."""
    if parsed is None:
        parsed = parse_manifest(bytes(manifest.body), manifest.media_type)
    refs = {(manifest.digest, MANIFEST), *parsed.references}
    children = [digest for digest, kind in parsed.references if kind == MANIFEST]
    for child in Manifest.objects.filter(digest__in=children):
        try:
            refs.update(parse_manifest(bytes(child.body), child.media_type).references)
        except UpstreamInvalid:  # stored before validation existed: linked once fetched
            continue
    return link(route, refs)
