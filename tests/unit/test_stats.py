"""Buffered access counts (mirror/stats.py): a flush writes each row's own increment, whatever
rows share one UPDATE, and keeps for the next flush what it could not write."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from goproxy.models import ModuleVersion
from mirror import stats
from mirror.models import StoredObject

pytestmark = pytest.mark.django_db


def _count(key: str) -> tuple[int, bool]:
    row = StoredObject.objects.get(key=key)
    return row.access_count, row.last_access is not None


def test_each_row_gets_its_own_increment_in_few_statements(monkeypatch) -> None:
    monkeypatch.setattr(stats, "UPDATE_ROWS", 3)
    StoredObject.objects.bulk_create(StoredObject(key=f"k{i}", size=1) for i in range(8))
    for version in ("v1.0.0", "v1.1.0"):
        ModuleVersion.objects.create(module="example.com/m", version=version, zip_size=1)
    for i in range(7):  # k7 is not accessed
        for _ in range(1 + i % 2):  # k1, k3, k5 twice
            stats.record(
                "mirror.StoredObject",
                key=f"k{i}",
                count_field="access_count",
                last_field="last_access",
            )
    for _ in range(3):
        stats.record(
            "goproxy.ModuleVersion",
            module="example.com/m",
            version="v1.1.0",
            count_field="download_count",
            last_field="last_download",
        )
    with CaptureQueriesContext(connection) as flushed:
        stats.flush()
    # k0 k2 k4 k6 (+1: two UPDATEs of at most 3 rows), k1 k3 k5 (+2: one), the version (+3).
    assert len([q for q in flushed if q["sql"].startswith("UPDATE")]) == 4
    assert [_count(f"k{i}") for i in range(8)] == [
        (1, True),
        (2, True),
        (1, True),
        (2, True),
        (1, True),
        (2, True),
        (1, True),
        (0, False),
    ]
    counts = dict(ModuleVersion.objects.values_list("version", "download_count"))
    assert counts == {"v1.0.0": 0, "v1.1.0": 3}


def test_what_a_failed_flush_did_not_write_is_kept(monkeypatch) -> None:
    monkeypatch.setattr(stats, "UPDATE_ROWS", 1)
    StoredObject.objects.bulk_create(StoredObject(key=f"k{i}", size=1) for i in range(2))
    for key in ("k0", "k1", "missing-model-row"):
        stats.record(
            "mirror.StoredObject", key=key, count_field="access_count", last_field="last_access"
        )
    stats.record("mirror.NoSuchModel", pk=1)  # apps.get_model raises: the flush stops there
    with pytest.raises(LookupError):
        stats.flush()
    kept = dict(stats._pending)
    stats._pending.clear()
    written = sum(StoredObject.objects.values_list("access_count", flat=True))
    # The three StoredObject entries come first (insertion order): written, not kept.
    assert (written, list(kept.values())) == (2, [1])
