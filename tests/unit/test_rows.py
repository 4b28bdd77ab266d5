"""One-row INSERT ... ON CONFLICT (mirror/rows.py): what the ORM would store, defaults and
automatic fields included; a conflict leaves the row, or updates the columns named.
(On PostgreSQL: the three instances of tests/test_cluster.py write these rows.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from goproxy.models import ModuleVersion
from mirror import rows
from mirror.models import CachedDocument, StoredObject

pytestmark = pytest.mark.django_db


def test_a_row_as_the_orm_would_store_it() -> None:
    before = timezone.now()
    rows.insert(StoredObject, {"key": "k", "size": 5, "upstream_id": None}, conflict=("key",))
    row = StoredObject.objects.get(key="k")
    assert (row.size, row.upstream_id, row.access_count, row.last_access) == (5, None, 0, None)
    assert before - timedelta(seconds=1) <= row.created <= timezone.now()  # auto_now_add


def test_conflict_leaves_the_row() -> None:
    when = timezone.now() - timedelta(hours=1)
    values = {"namespace": "n", "key": "k", "body": b"\x00first", "fetched_at": when}
    rows.insert(CachedDocument, values, conflict=("namespace", "key"))
    rows.insert(CachedDocument, {**values, "body": b"second"}, conflict=("namespace", "key"))
    row = CachedDocument.objects.get(namespace="n", key="k")
    assert (bytes(row.body), row.fetched_at, row.status) == (b"\x00first", when, 200)


def test_conflict_updates_the_columns_named() -> None:
    first = {"module": "m", "version": "v1", "zip_size": 1}
    rows.insert(ModuleVersion, first, conflict=("module", "version"))
    ModuleVersion.objects.filter(module="m").update(download_count=7)
    rows.insert(
        ModuleVersion,
        {"module": "m", "version": "v1", "zip_size": 2},
        conflict=("module", "version"),
        update=("zip_size",),
    )
    row = ModuleVersion.objects.get(module="m", version="v1")
    assert (row.zip_size, row.download_count) == (2, 7)
    assert ModuleVersion.objects.count() == 1
