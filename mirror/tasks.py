"""Celery tasks of the core. Each is idempotent: with late acks, a task whose worker died is
delivered again, and must then do no harm."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import ecosystems, eviction, prewarm, reverify, sweep
from .models import AlwaysWarm

log = logging.getLogger(__name__)


@shared_task(name="mirror.warm_item")
def warm_item(item_id: int) -> None:
    """Run one prewarm item; queue it again when it has to wait (slot, budget, retry)."""
    wait = prewarm.run_item(item_id)
    if wait is not None:
        warm_item.apply_async((item_id,), countdown=wait)


@shared_task(name="mirror.refresh_popular")
def refresh_popular() -> int | None:
    """A refresh job for the most pulled references of the last MIRROR_POPULAR_DAYS days and
    the always-warm list: moved tags are fetched anew, lists and @latest revalidated.
    Returns the job's id (None when there is nothing to refresh)."""
    since = timezone.now() - dt.timedelta(days=settings.MIRROR_POPULAR_DAYS)
    wanted = [
        prewarm.ItemSpec(row.kind, row.reference, tuple(row.platforms or ()))
        for row in AlwaysWarm.objects.filter(enabled=True).order_by("pk")
    ]
    for ecosystem in ecosystems.all_ecosystems():
        for popular in ecosystem.popular(since, settings.MIRROR_POPULAR_TOP):
            wanted.append(prewarm.ItemSpec(ecosystem.kind, popular.reference, popular.platforms))
    valid = _unique(wanted)
    if not valid:
        return None
    job = prewarm.create_job(valid, source="schedule", requested_by="schedule", refresh=True)
    return job.pk


def _unique(specs: list[prewarm.ItemSpec]) -> list[prewarm.ItemSpec]:
    """One spec per reference as its ecosystem normalizes it ("alpine:3.19" in the always-warm
    list and a popular "docker.io/library/alpine:3.19" are one item), with the union of their
    platforms (none: all). A reference whose upstream went away is skipped, not fatal."""
    unique: dict[tuple[str, str], prewarm.ItemSpec] = {}
    for spec in specs:
        try:
            reference = ecosystems.get(spec.kind).resolve(spec.reference).reference
        except ecosystems.InvalidReference as e:
            log.warning("refresh skips %s %s: %s", spec.kind, spec.reference, e)
            continue
        seen = unique.get((spec.kind, reference))
        platforms = spec.platforms
        if seen is not None:
            both = set(seen.platforms) | set(platforms)
            platforms = () if not seen.platforms or not platforms else tuple(sorted(both))
        unique[(spec.kind, reference)] = prewarm.ItemSpec(spec.kind, reference, platforms)
    return list(unique.values())


@shared_task(name="mirror.requeue_stalled")
def requeue_stalled() -> int:
    """Queue again the prewarm items that lost their task (mirror.prewarm.stalled_items);
    returns how many."""
    return prewarm.enqueue_items(prewarm.stalled_items(settings.MIRROR_PREWARM_STALLED_SECONDS))


@shared_task(name="mirror.reverify")
def reverify_cache() -> int:
    """Re-verify a sample of the cache (mirror/reverify.py); returns how many objects were
    quarantined."""
    return len(reverify.run())


@shared_task(name="mirror.evict")
def evict() -> int:
    """One eviction pass (mirror/eviction.py); returns how many units were evicted (0 when
    another pass is running)."""
    try:
        return len(eviction.run())
    except eviction.Busy:
        log.info("eviction skipped: another pass is running")
        return 0


@shared_task(name="mirror.sweep_fills")
def sweep_fills() -> int:
    """Remove what crashed fills left (mirror/sweep.py); returns how many leases and
    temporary objects went."""
    swept = sweep.sweep()
    return swept.leases + swept.temporary
