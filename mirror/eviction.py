"""A bounded cache: keep every upstream within its budget (Upstream.max_bytes) and the whole
cache within MIRROR_CACHE_MAX_BYTES, evicting the least recently pulled content first.

Usage is the sum of the stored objects' sizes in the index (StoredObject), per upstream and in
all. An ecosystem (mirror/ecosystems.py) says what goes together (a `Unit`: an image tag, a
manifest pulled by digest, a module version) and in which order; for each unit, in one
transaction, the ecosystem removes its metadata (`evict`), and the core deletes the index rows
of the unit's objects that no kept metadata still refers to (`referenced`); then, once
committed, their bytes in storage. A pull that comes after finds no object and fills it anew.

Never evicted:
- pinned content: tag pins and the enabled always-warm references (AlwaysWarm), with what
  they reach (the ecosystems leave them out);
- an object with a live fill lease (it is being written), or pulled or cached within
  MIRROR_EVICT_GRACE_SECONDS (it may be being served): the whole unit is then kept, so that
  no metadata goes without its objects. Pulls are counted in each process's buffer
  (mirror/stats.py) and written every MIRROR_STATS_FLUSH_SECONDS, so a pull newer than that
  may not be known yet: keep the grace period well above it (the defaults: 300 s and 5 s).
  A reader that already opened an object keeps reading it (a local file stays readable once
  open; an S3 GET under way completes).

Units evicted for an upstream's budget are that upstream's; for the total budget they are
chosen across all upstreams by last access. Each unit evicted is an Eviction row (the admin,
the API and `entrepot_evictions` in /metrics read them) and counts in this process's
EVICTED_OBJECTS / EVICTED_BYTES. Purges by operators are recorded the same way
(`delete_objects`, reason "purge").

One pass runs at a time across instances: it holds a lease (mirror/leases.py), renewed as it
goes; a pass that loses it stops.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.functions import Now
from django.utils import timezone

from . import ecosystems, leases, stats
from .ecosystems import Ecosystem, Unit
from .metrics import EVICTED_BYTES, EVICTED_OBJECTS
from .models import AlwaysWarm, Eviction, FillLease, StoredObject, Upstream
from .storage import get_storage

log = logging.getLogger(__name__)

LEASE_KEY = "eviction-pass"
Reason = Eviction.Reason
NO_UPSTREAM = "none"  # the metrics' label of objects whose upstream was deleted


class Busy(Exception):
    """Another eviction pass holds the lease."""


@dataclass(frozen=True)
class StoredItem:
    """A stored object as the index knew it before it went."""

    key: str
    size: int
    upstream_id: int | None


@dataclass(frozen=True)
class Freed:
    """What one eviction took out of the cache."""

    eviction: Eviction
    objects: list[StoredItem]


@dataclass
class Usage:
    """Bytes in the cache per upstream id (None: objects of deleted upstreams) and in all."""

    by_upstream: dict[int | None, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_upstream.values())

    def remove(self, objects: Iterable[StoredItem]) -> None:
        for obj in objects:
            self.by_upstream[obj.upstream_id] = self.by_upstream.get(obj.upstream_id, 0) - obj.size


def usage() -> Usage:
    """The cache's usage as the index records it (after this process's pending pull counts
    are written, so that the order of what follows sees them)."""
    stats.flush()
    rows = StoredObject.objects.order_by().values("upstream_id").annotate(size=Sum("size"))
    return Usage({row["upstream_id"]: row["size"] or 0 for row in rows})


def run() -> list[Freed]:
    """One eviction pass: each upstream over its budget, then the whole cache over
    MIRROR_CACHE_MAX_BYTES. Returns what was evicted, in order. Raises Busy when another
    pass is running."""
    lease = leases.claim(LEASE_KEY)
    if lease is None:
        raise Busy("another eviction pass is running")
    try:
        return _Pass(lease).run()
    finally:
        leases.release(lease)


class _Pass:
    """One pass: the usage it started from, less what it freed since."""

    def __init__(self, lease: FillLease) -> None:
        self.lease = lease
        self.usage = usage()
        grace = dt.timedelta(seconds=settings.MIRROR_EVICT_GRACE_SECONDS)
        self.cutoff = timezone.now() - grace
        self.keep = {
            ecosystem.kind: list(
                AlwaysWarm.objects.filter(kind=ecosystem.kind, enabled=True).values_list(
                    "reference", flat=True
                )
            )
            for ecosystem in ecosystems.all_ecosystems()
        }
        self.freed: list[Freed] = []

    def run(self) -> list[Freed]:
        budgets = Upstream.objects.filter(max_bytes__isnull=False).values_list("id", "max_bytes")
        for upstream_id, budget in budgets:
            self._evict(upstream_id, budget, Reason.UPSTREAM_BUDGET)
        if settings.MIRROR_CACHE_MAX_BYTES:
            self._evict(None, settings.MIRROR_CACHE_MAX_BYTES, Reason.TOTAL_BUDGET)
        return self.freed

    def _used(self, upstream_id: int | None) -> int:
        if upstream_id is None:
            return self.usage.total
        return self.usage.by_upstream.get(upstream_id, 0)

    def _evict(self, upstream_id: int | None, budget: int, reason: str) -> None:
        """Evict the upstream's units (None: every upstream's), least recently pulled first,
        until its usage is within `budget`."""
        if self._used(upstream_id) <= budget:
            return
        for ecosystem, unit in _units(upstream_id, self.keep):
            if unit.last_access >= self.cutoff:
                break  # the rest were pulled even more recently
            if not leases.renew(self.lease):
                log.warning("the eviction pass lost its lease: stopping")
                return
            freed = evict_unit(ecosystem, unit, reason, self.cutoff)
            if freed is not None:
                self.freed.append(freed)
                self.usage.remove(freed.objects)
            if self._used(upstream_id) <= budget:
                return
        log.warning(
            "%s still uses %d bytes, over its budget of %d, after evicting what it may: the "
            "rest is pinned, shared with kept content, or pulled in the last %g s",
            "the cache" if upstream_id is None else f"upstream #{upstream_id}",
            self._used(upstream_id),
            budget,
            settings.MIRROR_EVICT_GRACE_SECONDS,
        )


def _units(upstream_id: int | None, keep: dict[str, list[str]]) -> Iterator[tuple[Ecosystem, Unit]]:
    """Every ecosystem's units of the upstream (None: all), least recently pulled first."""

    def tagged(ecosystem: Ecosystem) -> Iterator[tuple[Ecosystem, Unit]]:
        for unit in ecosystem.eviction_units(upstream_id, keep[ecosystem.kind]):
            yield ecosystem, unit

    streams = [tagged(ecosystem) for ecosystem in ecosystems.all_ecosystems()]
    return heapq.merge(*streams, key=lambda pair: pair[1].last_access)


class _Kept(Exception):
    """The unit has an object in use: its eviction is rolled back."""


def evict_unit(ecosystem: Ecosystem, unit: Unit, reason: str, cutoff: dt.datetime) -> Freed | None:
    """Evict one unit: its metadata, the index rows of the objects nothing kept refers to,
    an Eviction row (one transaction), then those objects in storage. None (and nothing
    changed) when one of those objects has a live fill lease or was pulled or cached since
    `cutoff`."""
    try:
        with transaction.atomic():
            ecosystem.evict(unit)
            free = sorted(unit.keys - ecosystem.referenced(unit))
            rows = StoredObject.objects.filter(key__in=free)
            if (
                rows.filter(Q(last_access__gte=cutoff) | Q(created__gte=cutoff)).exists()
                or FillLease.objects.filter(key__in=free, expires_at__gte=Now()).exists()
            ):
                raise _Kept
            objects = [StoredItem(*row) for row in rows.values_list("key", "size", "upstream_id")]
            rows.delete()
            eviction = _record(
                unit.kind, unit.reference, unit.upstream_id, reason, objects, unit.last_access
            )
    except _Kept:
        log.info("eviction keeps %s %s: in use", unit.kind, unit.reference)
        return None
    _delete_stored([obj.key for obj in objects])
    _count(objects, reason)
    log.info(
        "evicted %s %s (%s): %d objects, %d bytes",
        unit.kind,
        unit.reference,
        reason,
        eviction.object_count,
        eviction.bytes,
    )
    return Freed(eviction, objects)


def delete_objects(
    keys: Iterable[str], *, kind: str, reference: str, upstream_id: int | None
) -> int:
    """An operator's purge: delete these stored objects (index rows, then bytes) and record
    it as an Eviction (reason "purge", counted in the metrics). Returns how many objects
    there were (in the index or in storage). The caller leaves out objects being filled."""
    storage = get_storage()
    keys = sorted(set(keys))
    indexed = {
        key: StoredItem(key, size, upstream)
        for key, size, upstream in StoredObject.objects.filter(key__in=keys).values_list(
            "key", "size", "upstream_id"
        )
    }
    objects = []
    for key in keys:
        if key in indexed:
            objects.append(indexed[key])
        elif (size := storage.stat(key)) is not None:
            objects.append(StoredItem(key, size, upstream_id))
    StoredObject.objects.filter(key__in=keys).delete()
    _delete_stored(keys)
    eviction = _record(kind, reference, upstream_id, Reason.PURGE, objects, None)
    _count(objects, Reason.PURGE)
    log.info("purged %s %s: %d objects, %d bytes", kind, reference, len(objects), eviction.bytes)
    return len(objects)


def _record(
    kind: str,
    reference: str,
    upstream_id: int | None,
    reason: str,
    objects: list[StoredItem],
    last_access: dt.datetime | None,
) -> Eviction:
    return Eviction.objects.create(
        upstream_id=upstream_id,
        kind=kind,
        reference=reference[:1024],
        object_count=len(objects),
        bytes=sum(obj.size for obj in objects),
        last_access=last_access,
        reason=reason,
    )


def _delete_stored(keys: list[str]) -> None:
    """Delete the objects' bytes (their index rows are gone): a failure leaves bytes that
    no row counts, logged for the operator."""
    storage = get_storage()
    for key in keys:
        try:
            storage.delete(key)
        except Exception:
            log.exception("could not delete %s from storage (its index row is gone)", key)


def _count(objects: list[StoredItem], reason: str) -> None:
    names = dict(Upstream.objects.values_list("id", "name"))
    for obj in objects:
        upstream = names.get(obj.upstream_id, NO_UPSTREAM)
        EVICTED_OBJECTS.labels(upstream=upstream, reason=reason).inc()
        EVICTED_BYTES.labels(upstream=upstream, reason=reason).inc(obj.size)
