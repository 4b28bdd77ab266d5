"""Fill leases in the database: one filler per key across threads, processes and instances.

Claiming is an INSERT on a unique key (atomic on SQLite and PostgreSQL); an expired lease is
taken over with a conditional UPDATE, so exactly one claimant wins either way.

Every time is the database's: expiries are computed in SQL from its clock (`Now()`) and
compared with it, so instances whose clocks disagree still agree on who holds a lease (with
each instance's own clock, one running a minute behind wrote leases that were born expired,
and another instance took them over mid-fill).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from functools import cache

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Now

from .models import FillLease

HOST = socket.gethostname()


def _expiry() -> ExpressionWrapper:
    """The database's now plus one lease period, evaluated by the database."""
    period = dt.timedelta(seconds=settings.MIRROR_FILL_LEASE_SECONDS)
    return ExpressionWrapper(Now() + period, output_field=DateTimeField())


def new_owner() -> str:
    """An owner id naming the host (followers on the same host may read the spool file)."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def is_local(lease: FillLease) -> bool:
    return lease.owner.split(":", 1)[0] == HOST


def claim(key: str, spool_path: str = "", size: int | None = None) -> FillLease | None:
    """Become the filler of `key`, or None when a live lease is held by someone else.

    `spool_path` tells followers on this host where the bytes can be read as they arrive,
    `size` how many to expect. The row returned names the lease (`pk`, `key`, `owner`: what
    renew and release use); its `expires_at` is the database's and is not read back (one
    query fewer per fill)."""
    owner = new_owner()
    try:
        with transaction.atomic():
            lease = FillLease.objects.create(
                key=key, owner=owner, expires_at=_expiry(), spool_path=spool_path, size=size
            )
    except IntegrityError:
        taken = FillLease.objects.filter(key=key, expires_at__lt=Now()).update(
            owner=owner, expires_at=_expiry(), spool_path=spool_path, size=size
        )
        if not taken:
            return None
        return FillLease.objects.filter(key=key, owner=owner).first()
    lease.expires_at = None  # computed by the database; never read from this object
    return lease


def renew(lease: FillLease) -> bool:
    """Extend the lease; False if it was lost (expired and taken over)."""
    return bool(
        FillLease.objects.filter(pk=lease.pk, owner=lease.owner).update(expires_at=_expiry())
    )


def release(lease: FillLease) -> None:
    FillLease.objects.filter(pk=lease.pk, owner=lease.owner).delete()


def current(key: str) -> FillLease | None:
    """The live lease on `key`, if any. Every miss asks, and there is rarely a row: a
    statement of our own says so first (the ORM's query, built per call, was most of the
    cost of a small fill's claim; py-spy, 2026-12-02)."""
    with connection.cursor() as cursor:
        cursor.execute(_any_row(), [key])
        if cursor.fetchone() is None:
            return None
    return FillLease.objects.filter(key=key, expires_at__gte=Now()).first()


@cache
def _any_row() -> str:
    quote = connection.ops.quote_name
    return f"SELECT 1 FROM {quote(FillLease._meta.db_table)} WHERE {quote('key')} = %s"


def holder(key: str) -> tuple[str, bool] | None:
    """(owner, live) of the lease row on `key`, expired or not, in one query; None when
    there is none (its filler ended and released it).

    One query, not `current()` then a second look: a takeover (the same row, a new owner)
    between two queries made a follower see "no live lease" and then "not my filler's row",
    and take a dead filler for one that failed."""
    live = ExpressionWrapper(Q(expires_at__gte=Now()), output_field=BooleanField())
    row = FillLease.objects.filter(key=key).annotate(live=live).values_list("owner", "live")
    return row.first()


def live_keys() -> set[str]:
    """Keys whose fill holds a live lease (the S3 sweep leaves their uploads alone)."""
    return set(FillLease.objects.filter(expires_at__gte=Now()).values_list("key", flat=True))


def sweep_expired() -> int:
    """Remove the leases of fillers that died a lease period ago or more; return how many.

    The grace period is the followers': a follower tells a filler that died (its row still
    there, expired) from one that failed (its row released) and takes a dead filler's fill
    over; a row swept before it looked would read as a failure."""
    period = dt.timedelta(seconds=settings.MIRROR_FILL_LEASE_SECONDS)
    expired = ExpressionWrapper(Now() - period, output_field=DateTimeField())
    return FillLease.objects.filter(expires_at__lt=expired).delete()[0]
