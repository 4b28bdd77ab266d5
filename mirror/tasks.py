"""Celery tasks of the core. Each is idempotent: with late acks, a task whose worker died is
delivered again, and must then do no harm."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from . import ecosystems, prewarm
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
    specs: dict[tuple[str, str], prewarm.ItemSpec] = {}
    for row in AlwaysWarm.objects.filter(enabled=True):
        spec = prewarm.ItemSpec(row.kind, row.reference, tuple(row.platforms or ()))
        specs.setdefault((spec.kind, spec.reference), spec)
    for ecosystem in ecosystems.all_ecosystems():
        for popular in ecosystem.popular(since, settings.MIRROR_POPULAR_TOP):
            spec = prewarm.ItemSpec(ecosystem.kind, popular.reference, popular.platforms)
            specs.setdefault((spec.kind, spec.reference), spec)
    valid = []
    for spec in specs.values():  # a reference whose upstream went away is skipped, not fatal
        try:
            ecosystems.get(spec.kind).resolve(spec.reference)
        except ecosystems.InvalidReference as e:
            log.warning("refresh skips %s %s: %s", spec.kind, spec.reference, e)
            continue
        valid.append(spec)
    if not valid:
        return None
    job = prewarm.create_job(valid, source="schedule", requested_by="schedule", refresh=True)
    return job.pk
