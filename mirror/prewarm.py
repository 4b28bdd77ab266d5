"""Prewarm jobs: a job is a list of items (an image or a module each), each item warmed by its
ecosystem (mirror/ecosystems.py) through the same fill path as a client pull.

An item runs as one Celery task (mirror/tasks.py), or inline from `manage.py prewarm`:
`run_item` is idempotent (an item that ended is left alone, so a task delivered twice after a
worker died does no harm) and returns how long to wait when the item must run again later:
a free slot (at most MIRROR_PREWARM_PER_UPSTREAM items per upstream, across every worker), the
upstream's rate-limit budget (mirror/budgets.py), or a retry after a 5xx/429/timeout, with
exponential backoff or the upstream's Retry-After.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from . import budgets, ecosystems, leases
from .ecosystems import Cancelled, InvalidReference
from .errors import MirrorError, Overloaded, ServiceUnavailable, UpstreamUnavailable
from .models import FillLease, PrewarmItem, PrewarmJob

log = logging.getLogger(__name__)

Status = PrewarmItem.Status
ENDED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
SLOT_POLL = 2.0  # seconds before an item waiting for a slot looks again
# A task that arrives this much before its item's `not_before` is a duplicate and drops out.
EARLY = timezone.timedelta(seconds=1)
PROGRESS_EVERY = 0.5  # seconds between writes of an item's progress (and cancel checks)


@dataclass(frozen=True)
class ItemSpec:
    kind: str  # an ecosystem's kind: "image" | "module"
    reference: str
    platforms: tuple[str, ...] = ()


@dataclass
class JobInvalid(Exception):
    """References that cannot be warmed, by field ("images", "modules"), with messages."""

    errors: dict[str, list[str]] = field(default_factory=dict)


def create_job(
    items: Iterable[ItemSpec],
    *,
    source: str,
    requested_by: str = "",
    platforms: list[str] | None = None,
    refresh: bool = False,
    enqueue: bool = True,
) -> PrewarmJob:
    """Validate every reference, store the job and its items, and queue them once the
    transaction commits. Raises JobInvalid (nothing stored) if any reference is bad."""
    errors: dict[str, list[str]] = {}
    resolved = []
    for spec in items:
        try:
            target = ecosystems.get(spec.kind).resolve(spec.reference)
        except InvalidReference as e:
            errors.setdefault(f"{spec.kind}s", []).append(f"{spec.reference[:200]}: {e}")
            continue
        resolved.append((spec, target))
    if errors:
        raise JobInvalid(errors)
    with transaction.atomic():
        job = PrewarmJob.objects.create(
            source=source, requested_by=requested_by, platforms=platforms or [], refresh=refresh
        )
        PrewarmItem.objects.bulk_create(
            PrewarmItem(
                job=job,
                kind=spec.kind,
                reference=target.reference,
                upstream_id=target.upstream_id,
                # An item's own platforms, else the job's ([]: all).
                platforms=list(spec.platforms or platforms or []),
            )
            for spec, target in resolved
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue(job))
    if not resolved:
        update_job(job.pk)
    return job


def _enqueue(job: PrewarmJob) -> None:
    """Queue the job's items. A broker that cannot be reached leaves them queued in the
    database, where `requeue_stalled` (a scheduled task) finds them."""
    enqueue_items(job.items.values_list("pk", flat=True))


def enqueue_items(item_ids: Iterable[int]) -> int:
    """Send a task per item; returns how many were sent before the broker failed, if it did."""
    from .tasks import warm_item  # the tasks module imports this one

    sent = 0
    try:
        for item_id in item_ids:
            warm_item.delay(item_id)
            sent += 1
    except Exception:  # kombu's errors vary by transport: the items wait in the database
        log.exception("could not queue prewarm items; they wait for the next requeue")
    return sent


def stalled_items(older_than: float) -> list[int]:
    """Items that should be running but may have no task: queued past their `not_before`
    (or created) more than `older_than` seconds ago (a broker that was down, a lost
    countdown), or running with no live runner lease (a worker died; with Redis its task
    would come back only after the visibility timeout). Running them twice is harmless."""
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than)
    queued = PrewarmItem.objects.filter(status=Status.QUEUED, job__cancel_requested=False)
    waiting = queued.filter(not_before__lt=cutoff) | queued.filter(
        not_before=None, job__created__lt=cutoff
    )
    ids = list(waiting.values_list("pk", flat=True))
    live = {
        key.removeprefix("prewarm-item:")
        for key in FillLease.objects.filter(
            key__startswith="prewarm-item:", expires_at__gte=Now()
        ).values_list("key", flat=True)
    }
    running = PrewarmItem.objects.filter(status=Status.RUNNING, started__lt=cutoff)
    ids += [pk for pk in running.values_list("pk", flat=True) if str(pk) not in live]
    return ids


def cancel(job: PrewarmJob) -> PrewarmJob:
    """Stop a job: queued items end now, running ones at their next progress check."""
    PrewarmJob.objects.filter(pk=job.pk, finished__isnull=True).update(cancel_requested=True)
    job.items.filter(status=Status.QUEUED).update(status=Status.CANCELLED, finished=timezone.now())
    update_job(job.pk)
    job.refresh_from_db()
    return job


def update_job(job_id: int) -> None:
    """Derive the job's status from its items'."""
    job = PrewarmJob.objects.get(pk=job_id)
    if job.finished is not None:
        return  # an ended job keeps its status (a late cancel changes nothing)
    counts = Counter(job.items.values_list("status", flat=True))
    total = sum(counts.values())
    ended = sum(counts[s] for s in ENDED)
    now = timezone.now()
    changes: dict[str, object] = {}
    if ended == total:
        if job.cancel_requested or counts[Status.CANCELLED]:
            status = PrewarmJob.Status.CANCELLED
        elif counts[Status.SUCCEEDED] == total:
            status = PrewarmJob.Status.SUCCEEDED
        elif counts[Status.SUCCEEDED] == 0:
            status = PrewarmJob.Status.FAILED
        else:
            status = PrewarmJob.Status.PARTIAL
        if job.finished is None:
            changes["finished"] = now
    elif ended or counts[Status.RUNNING] or job.items.filter(attempts__gt=0).exists():
        status = PrewarmJob.Status.RUNNING
    else:
        status = PrewarmJob.Status.QUEUED
    if status != PrewarmJob.Status.QUEUED and job.started is None:
        changes["started"] = now
    if status != job.status:
        changes["status"] = status
    if changes:
        PrewarmJob.objects.filter(pk=job_id).update(**changes)


def run_item(item_id: int) -> float | None:
    """Run one item now if it can; None when it has ended (or another runner has it), else
    seconds until it should run again (waiting for a slot, the upstream's budget, or a
    retry)."""
    item = PrewarmItem.objects.select_related("job").filter(pk=item_id).first()
    if item is None or item.status in ENDED:
        return None
    if item.not_before and item.not_before > timezone.now() + EARLY:
        return None  # a duplicate task: the item's own is scheduled for later
    if item.job.cancel_requested:
        _end(item, Status.CANCELLED)
        update_job(item.job_id)
        return None
    if item.upstream_id is not None and (wait := budgets.defer_seconds(item.upstream_id)):
        _defer(item, wait, "waiting for the upstream's rate-limit budget")
        return wait
    # The item's own lease: a task delivered twice runs it once; a dead runner's lease
    # expires, and the redelivered task takes the item over.
    held = _Leases.claim(f"prewarm-item:{item_id}")
    if held is None:
        return None
    try:
        if not held.add_one_of(
            f"prewarm-slot:{item.upstream_id}:{n}"
            for n in range(max(1, settings.MIRROR_PREWARM_PER_UPSTREAM))
        ):
            _wait(item, SLOT_POLL)
            return SLOT_POLL
        item.refresh_from_db()
        if item.status in ENDED:
            return None
        return _run(item)
    finally:
        held.release()
        update_job(item.job_id)


def _run(item: PrewarmItem) -> float | None:
    now = timezone.now()
    item.attempts += 1
    PrewarmItem.objects.filter(pk=item.pk).update(
        status=Status.RUNNING, attempts=item.attempts, started=item.started or now, error=""
    )
    update_job(item.job_id)
    progress = ItemProgress(item)
    try:
        ecosystems.get(item.kind).warm(
            item.reference, list(item.platforms), item.job.refresh, progress
        )
    except Cancelled:
        progress.flush()
        _end(item, Status.CANCELLED)
    except (UpstreamUnavailable, Overloaded, ServiceUnavailable, DatabaseError) as e:
        progress.flush()
        if item.attempts > settings.MIRROR_PREWARM_RETRIES:
            _end(item, Status.FAILED, f"gave up after {item.attempts} attempts: {e}")
            return None
        wait = getattr(e, "retry_after", None) or settings.MIRROR_PREWARM_BACKOFF * 2 ** (
            item.attempts - 1
        )
        wait = min(wait, settings.MIRROR_PREWARM_MAX_BACKOFF)
        _defer(item, wait, f"attempt {item.attempts} failed, retrying: {e}")
        return wait
    except (MirrorError, InvalidReference) as e:
        progress.flush()
        _end(item, Status.FAILED, str(e))
    except Exception as e:
        log.exception("prewarm item %s (%s %s) failed", item.pk, item.kind, item.reference)
        progress.flush()
        _end(item, Status.FAILED, f"internal error: {type(e).__name__}")
    else:
        progress.flush()
        _end(item, Status.SUCCEEDED)
    return None


def _end(item: PrewarmItem, status: str, error: str = "") -> None:
    PrewarmItem.objects.filter(pk=item.pk).update(
        status=status, error=error[:2000], finished=timezone.now(), not_before=None
    )


def _wait(item: PrewarmItem, seconds: float) -> None:
    """Note when the item's next task is due (one waiting for a slot keeps its message)."""
    PrewarmItem.objects.filter(pk=item.pk).update(
        not_before=timezone.now() + timezone.timedelta(seconds=seconds)
    )


def _defer(item: PrewarmItem, seconds: float, why: str) -> None:
    PrewarmItem.objects.filter(pk=item.pk).update(
        status=Status.QUEUED,
        error=why[:2000],
        not_before=timezone.now() + timezone.timedelta(seconds=seconds),
    )


class ItemProgress:
    """Progress of a running item, written to its row at most every PROGRESS_EVERY seconds;
    each write also looks whether the job was cancelled."""

    def __init__(self, item: PrewarmItem) -> None:
        self.item_id = item.pk
        self.job_id = item.job_id
        self.done = 0
        self.total = 0
        self._written = 0.0
        self._cancelled = False

    def add_total(self, size: int) -> None:
        self.total += size
        self._maybe_flush()

    def add_done(self, size: int) -> None:
        self.done += size
        self._maybe_flush()

    def check(self) -> None:
        self._maybe_flush()
        if self._cancelled:
            raise Cancelled()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._written >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        self._written = time.monotonic()
        PrewarmItem.objects.filter(pk=self.item_id).update(
            bytes_done=self.done, bytes_total=max(self.total, self.done)
        )
        self._cancelled = PrewarmJob.objects.filter(pk=self.job_id, cancel_requested=True).exists()


class _Leases:
    """Leases (mirror/leases.py) held while an item runs, renewed by one thread, so that a
    dead worker's item and upstream slot free themselves within a lease period."""

    def __init__(self, lease: FillLease) -> None:
        self._leases = [lease]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="prewarm-leases", daemon=True)
        self._thread.start()

    @classmethod
    def claim(cls, key: str) -> _Leases | None:
        lease = leases.claim(key)
        return None if lease is None else cls(lease)

    def add_one_of(self, keys: Iterable[str]) -> bool:
        """Hold the first of `keys` that is free; False if none is."""
        for key in keys:
            if (lease := leases.claim(key)) is not None:
                self._leases.append(lease)
                return True
        return False

    def _renew(self) -> None:
        period = settings.MIRROR_FILL_LEASE_SECONDS / 3
        try:
            while not self._stop.wait(period):
                for lease in list(self._leases):
                    try:
                        leases.renew(lease)
                    except DatabaseError:
                        log.warning("could not renew %s", lease.key, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        for lease in self._leases:
            try:
                leases.release(lease)
            except DatabaseError:  # it expires by itself
                log.warning("could not release %s", lease.key, exc_info=True)
