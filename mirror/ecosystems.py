"""How a protocol app plugs into the core's prewarm, refresh, re-verification and eviction.

The core runs jobs, schedules and budgets but knows no protocol: each protocol app registers
an `Ecosystem` in its AppConfig.ready() (`register(...)`), under the item kind it warms
("image", "module"). The core calls it with references as users wrote them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


class InvalidReference(ValueError):
    """A reference that cannot be warmed: malformed, or served by no configured upstream.
    The message is shown to the user (API 400, admin form error)."""


class Cancelled(Exception):
    """The job was cancelled: the warm stops where it is."""


class Progress(Protocol):
    """What a warm reports while it runs (mirror/prewarm.py writes it to the item row)."""

    def add_total(self, size: int) -> None:
        """More bytes to warm became known (a manifest listed its layers)."""

    def add_done(self, size: int) -> None:
        """Bytes are now in the cache (fetched, or found there already)."""

    def check(self) -> None:
        """Raise Cancelled if the job was cancelled; cheap enough to call per chunk."""


@dataclass(frozen=True)
class Target:
    """A validated reference and the upstream that serves it."""

    reference: str  # normalized, as stored on the item
    upstream_id: int


@dataclass(frozen=True)
class Popular:
    """A reference the scheduled refresh should keep fresh, with the platforms (images) its
    clients pulled ([]: all)."""

    reference: str
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """Cached content that failed re-verification."""

    key: str  # storage key, or a document's key when `namespace` is set
    reason: str
    upstream_id: int | None = None
    namespace: str = ""  # a cached document's (mirror/documents.py) rather than an object


@dataclass(frozen=True)
class Unit:
    """Cached content an ecosystem takes out of the cache together (mirror/eviction.py): an
    image tag or manifest with what only it reaches, a module version's files."""

    kind: str  # the ecosystem's
    reference: str  # as operators read it (the Eviction row's)
    upstream_id: int | None
    last_access: dt.datetime  # its last pull; when it was cached if it was never pulled
    keys: frozenset[str]  # stored objects it may free (those nothing kept refers to)
    handle: Hashable = None  # what the ecosystem needs to evict it


class Ecosystem(Protocol):
    kind: str  # "image" | "module": PrewarmItem.kind

    def resolve(self, reference: str) -> Target:
        """Validate a reference and route it; raises InvalidReference."""

    def warm(self, reference: str, platforms: list[str], refresh: bool, progress: Progress) -> None:
        """Bring a reference into the cache through the same fill path as a client pull.

        `platforms` ([]: all) limits which manifests of an image index are warmed; `refresh`
        revalidates tags, lists and @latest now even within their TTL. Items already cached
        finish without reading their bytes. Raises the core's MirrorErrors (UpstreamUnavailable
        is retried by the caller), InvalidReference, or Cancelled."""

    def popular(self, since: dt.datetime, limit: int) -> list[Popular]:
        """The most pulled references since `since`, most pulled first, at most `limit`."""

    def reverify(self, budget_bytes: int) -> Iterable[Finding]:
        """Re-check a sample of this ecosystem's cached content that the core cannot check
        by digest alone (Go files against the checksum database), about `budget_bytes`
        in all, least recently verified first. Quarantining is the caller's."""

    def eviction_units(self, upstream_id: int | None, keep: Sequence[str]) -> Iterator[Unit]:
        """The units of `upstream_id`'s cached content (None: of every upstream), least
        recently pulled first, each with at least one stored object among its keys. Never a
        pinned unit: the ecosystem's own pins, and the references in `keep` (the enabled
        always-warm references of this kind), nor what they reach. Reads the database as it
        is when the iteration starts; `evict` checks again."""

    def evict(self, unit: Unit) -> None:
        """Remove the unit's metadata (tags, manifests and links; a module version's row and
        documents), within the caller's transaction, leaving what kept content still refers
        to. The caller then deletes the stored objects `referenced` leaves out. A unit
        already gone (evicted or purged meanwhile) is not an error."""

    def referenced(self, unit: Unit) -> set[str]:
        """Those of the unit's keys that metadata still refers to (after `evict(unit)`)."""


_registry: dict[str, Ecosystem] = {}


def register(ecosystem: Ecosystem) -> None:
    _registry[ecosystem.kind] = ecosystem


def get(kind: str) -> Ecosystem:
    try:
        return _registry[kind]
    except KeyError:
        raise InvalidReference(f"unknown item kind {kind!r}") from None


def all_ecosystems() -> list[Ecosystem]:
    return list(_registry.values())
