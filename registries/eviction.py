"""Eviction of cached images: the "image" ecosystem's units (mirror/eviction.py).

A repository's cached content is what its links name (registries/links.py): manifests (kept in
the database) and blobs (stored objects). Its units, each with the blobs it reaches as keys:
- a tag: its cached answers under every Accept list, and the manifests they point to (an
  index with its children); last pulled when a client last asked for the tag (or, never
  pulled, when the upstream last confirmed it);
- a manifest no tag of the repository reaches (pulled by digest), with its children;
- a blob linked on its own (fetched by digest, no manifest of the repository names it).
Evicting a unit removes its tag rows, then the links of the manifests and blobs that nothing
kept in the repository still reaches (the other tags, pins, always-warm references, the other
manifests), then the manifest rows no repository links any more. A blob stays stored while any
repository links it: `referenced` answers from the links.

A pinned tag (TagPin) and an always-warm reference (a tag, or a digest) are never units, and
what they reach stays linked. Tag history stays: it records what the upstream said.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.db import transaction
from django.db.models.functions import Coalesce

from mirror.digests import storage_key
from mirror.ecosystems import InvalidReference, Unit
from mirror.errors import UpstreamInvalid
from mirror.models import StoredObject
from mirror.upstreams import upstreams_of_kind

from . import links, routing, tags
from .formats import BLOB, MANIFEST, parse_manifest
from .models import Link, Manifest, Repository, Tag, TagPin

KIND = "image"
BATCH = 500  # digests or keys per IN (...) query


@dataclass(frozen=True)
class Handle:
    """Which unit: a tag (`tag`), a manifest (`digest`), or a blob (`digest`, `blob`)."""

    repository_id: int
    tag: str = ""
    digest: str = ""
    blob: bool = False
    kept: frozenset[str] = frozenset()  # always-warm digests of the repository


class Graph:
    """What manifests reference, read from the database as needed (manifests never change)."""

    def __init__(self) -> None:
        self._refs: dict[str, tuple[tuple[str, str], ...]] = {}
        self.last_pull: dict[str, dt.datetime | None] = {}

    def _load(self, digests: Iterable[str]) -> None:
        missing = [d for d in set(digests) if d not in self._refs]
        for chunk in _chunks(missing):
            rows = Manifest.objects.filter(digest__in=chunk)
            for digest, media_type, body, last_pull in rows.values_list(
                "digest", "media_type", "body", "last_pull"
            ):
                try:
                    self._refs[digest] = parse_manifest(bytes(body), media_type).references
                except UpstreamInvalid:  # stored before validation existed
                    self._refs[digest] = ()
                self.last_pull[digest] = last_pull
        for digest in missing:  # known from a HEAD only: no row, nothing it references
            self._refs.setdefault(digest, ())

    def children(self, digests: Iterable[str]) -> set[str]:
        """The manifests these manifests (indexes) list."""
        digests = set(digests)
        self._load(digests)
        return {d for digest in digests for d, kind in self._refs[digest] if kind == MANIFEST}

    def closure(self, roots: Iterable[str]) -> tuple[set[str], set[str]]:
        """(manifests, blobs) reached from the manifest digests `roots`, the roots included."""
        manifests: set[str] = set()
        blobs: set[str] = set()
        todo = set(roots)
        while todo:
            self._load(todo)
            manifests |= todo
            found = {ref for digest in todo for ref in self._refs[digest]}
            blobs |= {digest for digest, kind in found if kind == BLOB}
            todo = {digest for digest, kind in found if kind == MANIFEST} - manifests
        return manifests, blobs


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def _kept(keep: Sequence[str]) -> dict[tuple[int, str], tuple[set[str], set[str]]]:
    """The always-warm references by (upstream id, repository): (tags, digests)."""
    from .warm import parse_reference  # warm registers this module: imported at its load

    kept: dict[tuple[int, str], tuple[set[str], set[str]]] = {}
    for reference in keep:
        try:
            parsed = parse_reference(reference)
        except InvalidReference:  # its upstream is gone: nothing of it to keep
            continue
        tags_, digests = kept.setdefault(
            (parsed.route.upstream.id, parsed.route.repository), (set(), set())
        )
        if parsed.digest:
            digests.add(parsed.digest)
        elif parsed.tag:
            tags_.add(parsed.tag)
    return kept


def eviction_units(upstream_id: int | None, keep: Sequence[str]) -> Iterator[Unit]:
    """The units of every repository of the upstream (None: of all), least recently pulled
    first."""
    kept = _kept(keep)
    upstreams = {u.id: u for u in upstreams_of_kind("oci", include_disabled=True)}
    repositories = Repository.objects.order_by("pk")
    if upstream_id is not None:
        repositories = repositories.filter(upstream_id=upstream_id)
    graph = Graph()
    units: list[Unit] = []
    for repository in repositories:
        upstream = upstreams.get(repository.upstream_id)
        if upstream is None:
            continue
        keep_tags, keep_digests = kept.get((upstream.id, repository.name), (set(), set()))
        name = routing.client_name(upstream, repository.name)
        units += _repository_units(repository, name, graph, keep_tags, keep_digests)
    units.sort(key=lambda unit: unit.last_access)
    return iter(units)


def _repository_units(
    repository: Repository, name: str, graph: Graph, keep_tags: set[str], keep_digests: set[str]
) -> list[Unit]:
    manifest_links: dict[str, dt.datetime] = {}
    blob_links: set[str] = set()
    for digest, kind, created in Link.objects.filter(repository=repository).values_list(
        "digest", "kind", "created"
    ):
        if kind == MANIFEST:
            manifest_links[digest] = created
        else:
            blob_links.add(digest)
    by_tag: dict[str, tuple[set[str], dt.datetime]] = {}
    rows = Tag.objects.filter(repository=repository).annotate(
        recency=Coalesce("last_pull", "fetched_at")
    )
    for tag, digest, recency in rows.values_list("name", "digest", "recency"):
        digests, last = by_tag.get(tag, (set(), recency))
        by_tag[tag] = (digests | {digest}, max(last, recency))
    pins = dict(TagPin.objects.filter(repository=repository).values_list("name", "digest"))
    kept_tags = set(pins) | keep_tags
    pinned_roots = set(pins.values()) | keep_digests
    pinned_roots |= {d for tag in kept_tags for d in by_tag.get(tag, (set(),))[0]}
    every_tag_root = {d for digests, _ in by_tag.values() for d in digests}
    tagged, _ = graph.closure(every_tag_root | pinned_roots)
    _, linked_blobs = graph.closure(manifest_links)
    children, _ = graph.closure(graph.children(manifest_links))

    stored = _stored(blob_links | linked_blobs)
    handle = Handle(repository.pk, kept=frozenset(keep_digests))
    units: list[Unit] = []

    def add(reference: str, last: dt.datetime, blobs: Iterable[str], **which: Any) -> None:
        keys = frozenset(storage_key(d) for d in blobs if storage_key(d) in stored)
        if keys:
            unit_handle = replace(handle, **which)
            units.append(Unit(KIND, reference, repository.upstream_id, last, keys, unit_handle))

    for tag, (digests, last) in by_tag.items():
        if tag not in kept_tags:
            add(f"{name}:{tag}", last, graph.closure(digests)[1], tag=tag)
    for digest, linked_at in manifest_links.items():
        if digest in tagged or digest in children:
            continue
        last = graph.last_pull.get(digest) or linked_at
        add(f"{name}@{digest}", last, graph.closure([digest])[1], digest=digest)
    for digest in blob_links - linked_blobs:
        key = storage_key(digest)
        if key in stored:
            add(f"{name}@{digest} (blob)", stored[key], [digest], digest=digest, blob=True)
    return units


def _stored(digests: Iterable[str]) -> dict[str, dt.datetime]:
    """The stored ones of these blobs: key -> last pulled (or cached, never pulled)."""
    keys = sorted({storage_key(d) for d in digests})
    found: dict[str, dt.datetime] = {}
    for chunk in _chunks(keys):
        rows = StoredObject.objects.filter(key__in=chunk).annotate(
            recency=Coalesce("last_access", "created")
        )
        found.update(rows.values_list("key", "recency"))
    return found


def evict(unit: Unit) -> None:
    """Remove the unit's tag rows, and the links (then manifest rows) of what nothing kept in
    its repository reaches any more."""
    handle = unit.handle
    assert isinstance(handle, Handle)
    repository = Repository.objects.filter(pk=handle.repository_id).first()
    if repository is None:
        return
    graph = Graph()
    if handle.tag:
        rows = Tag.objects.filter(repository=repository, name=handle.tag)
        roots = set(rows.values_list("digest", flat=True))
        rows.delete()
        manifests, blobs = graph.closure(roots)
    elif handle.blob:
        manifests, blobs = set(), {handle.digest}
    else:
        manifests, blobs = graph.closure([handle.digest])
    linked = Link.objects.filter(repository=repository)
    linked_manifests = set(linked.filter(kind=MANIFEST).values_list("digest", flat=True))
    kept_roots = (
        set(Tag.objects.filter(repository=repository).values_list("digest", flat=True))
        | set(TagPin.objects.filter(repository=repository).values_list("digest", flat=True))
        | handle.kept
        | (linked_manifests - manifests)
    )
    kept_manifests, kept_blobs = graph.closure(kept_roots)
    gone = (manifests & linked_manifests) - kept_manifests
    linked.filter(kind=MANIFEST, digest__in=gone).delete()
    linked.filter(kind=BLOB, digest__in=blobs - kept_blobs).delete()
    still = Link.objects.filter(kind=MANIFEST, digest__in=gone).values_list("digest", flat=True)
    Manifest.objects.filter(digest__in=gone - set(still)).delete()
    name = repository.name

    def forget() -> None:  # this process's memory of links and warm tag answers
        links.forget(repository.upstream_id, name)
        tags.forget()

    transaction.on_commit(forget)


def referenced(unit: Unit) -> set[str]:
    """Those of the unit's blobs some repository still links."""
    by_digest = {_digest_of(key): key for key in unit.keys}
    linked: set[str] = set()
    for chunk in _chunks(sorted(by_digest)):
        linked.update(
            Link.objects.filter(kind=BLOB, digest__in=chunk).values_list("digest", flat=True)
        )
    return {by_digest[digest] for digest in linked}


def _digest_of(key: str) -> str:
    """`alg:hex` of a blob key `blobs/alg/xx/hex` (digests.storage_key's inverse)."""
    _, algorithm, _, hexpart = key.split("/")
    return f"{algorithm}:{hexpart}"
