"""Clean up after crashed fills: expired leases, abandoned temporary objects (S3 multipart
uploads, temporary files) and spool files. Run at `make run`'s start (`manage.py sweep_fills`)
and periodically by the worker (`mirror.sweep_fills`), since in a deployment of many replicas
no single start sees every crash."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from . import leases
from .fill import sweep_spools
from .storage import get_storage


@dataclass(frozen=True)
class Swept:
    leases: int
    temporary: int


def sweep() -> Swept:
    expired = leases.sweep_expired()
    # Anything older than a lease cannot belong to a live fill (leases are renewed), but
    # an S3 upload's age is its start: uploads of keys with a live lease are kept.
    older_than = settings.MIRROR_FILL_LEASE_SECONDS * 2
    removed = get_storage().sweep(older_than, leases.live_keys()) + sweep_spools(older_than)
    return Swept(expired, removed)
