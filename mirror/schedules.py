"""The default Celery beat schedules, as django-celery-beat rows that operators edit in the
admin ("Periodic tasks"): created after `migrate` when missing, never changed afterwards.

- "refresh popular" runs `mirror.refresh_popular` every MIRROR_REFRESH_EVERY seconds;
- "re-verify" runs `mirror.reverify` every MIRROR_REVERIFY_EVERY seconds;
- "requeue stalled prewarm items" runs `mirror.requeue_stalled` every
  MIRROR_PREWARM_STALLED_SECONDS seconds;
- "evict" runs `mirror.evict` every MIRROR_EVICT_EVERY seconds;
- "sweep crashed fills" runs `mirror.sweep_fills` every MIRROR_SWEEP_EVERY seconds.

A schedule counts as present when any periodic task runs its task (whatever its name) or has
its name, so an operator may rename, retime or disable one and keep it so. Deleting one brings
the default back at the next `migrate` (`make run` migrates at every start): disable it instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.apps import apps as global_apps
from django.conf import settings
from django.db.models import Q


@dataclass(frozen=True)
class Default:
    name: str
    task: str
    setting: str  # seconds between runs
    description: str


DEFAULTS = (
    Default(
        "refresh popular",
        "mirror.refresh_popular",
        "MIRROR_REFRESH_EVERY",
        "Refresh the most pulled tags and modules and the always-warm list.",
    ),
    Default(
        "re-verify",
        "mirror.reverify",
        "MIRROR_REVERIFY_EVERY",
        "Re-check a sample of the cache against digests and the checksum database; "
        "quarantine what fails.",
    ),
    Default(
        "requeue stalled prewarm items",
        "mirror.requeue_stalled",
        "MIRROR_PREWARM_STALLED_SECONDS",
        "Queue again prewarm items whose task was lost (broker down, worker killed).",
    ),
    Default(
        "evict",
        "mirror.evict",
        "MIRROR_EVICT_EVERY",
        "Evict the least recently pulled content while an upstream or the whole cache is "
        "over its budget.",
    ),
    Default(
        "sweep crashed fills",
        "mirror.sweep_fills",
        "MIRROR_SWEEP_EVERY",
        "Remove expired fill leases and the temporary objects and spool files crashed fills left.",
    ),
)

# Largest unit first: the admin shows "every 6 hours" rather than "every 21600 seconds".
_UNITS = ((86400, "days"), (3600, "hours"), (60, "minutes"), (1, "seconds"))


def interval(seconds: int) -> tuple[int, str]:
    """(every, period) of an IntervalSchedule for `seconds`, in the largest whole unit."""
    if seconds < 1:
        raise ValueError(f"a schedule's interval must be at least 1 second, not {seconds}")
    return next((seconds // size, period) for size, period in _UNITS if seconds % size == 0)


def ensure_defaults(**kwargs: Any) -> list[str]:
    """post_migrate handler: create the missing default schedules; returns their names.

    Does nothing when the migration just run left django-celery-beat's tables out (a partial
    `migrate APP`)."""
    try:
        (kwargs.get("apps") or global_apps).get_model("django_celery_beat", "PeriodicTask")
    except LookupError:
        return []
    # The real models, not the migration state's: their save() tells a running beat to reload.
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    created = []
    for default in DEFAULTS:
        if PeriodicTask.objects.filter(Q(task=default.task) | Q(name=default.name)).exists():
            continue
        every, period = interval(int(getattr(settings, default.setting)))
        schedule = IntervalSchedule.objects.filter(every=every, period=period).first()
        if schedule is None:
            schedule = IntervalSchedule.objects.create(every=every, period=period)
        PeriodicTask.objects.create(
            name=default.name, task=default.task, interval=schedule, description=default.description
        )
        created.append(default.name)
    return created
