"""Fill leases: one holder per key, expiry and take-over, times from the database's clock."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from mirror import leases, tasks
from mirror.models import FillLease

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "blobs/sha256/ab/" + "ab" * 32


def test_one_holder_at_a_time() -> None:
    lease = leases.claim(KEY)
    assert lease is not None and leases.current(KEY) == lease
    assert leases.claim(KEY) is None
    leases.release(lease)
    assert leases.current(KEY) is None
    assert leases.claim(KEY) is not None


def test_expired_lease_is_taken_over(settings) -> None:
    settings.MIRROR_FILL_LEASE_SECONDS = 0.2
    dead = leases.claim(KEY)
    assert dead is not None
    time.sleep(0.3)
    assert leases.current(KEY) is None
    taker = leases.claim(KEY)
    assert taker is not None and taker.owner != dead.owner
    assert not leases.renew(dead)  # the dead filler learns it lost the lease
    leases.release(dead)  # and cannot release the new holder's
    assert leases.current(KEY) == taker


def test_claim_names_the_spool_and_renew() -> None:
    lease = leases.claim(KEY, "/spool/file", 1234)
    assert lease is not None
    current = leases.current(KEY)
    assert current is not None and (current.spool_path, current.size) == ("/spool/file", 1234)
    assert leases.renew(lease)


@pytest.mark.parametrize("skew", [-3600, 3600])
def test_times_come_from_the_database_clock(monkeypatch, skew: int) -> None:
    """An instance whose clock is an hour off (behind: its leases would be born expired and
    taken over mid-fill; ahead: a dead filler's lease would block the key for an hour) still
    holds a lease for exactly one period, as the database counts it. Skewing this process's
    clock is the only way to show two instances' clocks disagreeing; it is patched, not
    mocked away: the database's clock is real."""
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + dt.timedelta(seconds=skew))
    lease = leases.claim(KEY)
    assert lease is not None
    monkeypatch.setattr(timezone, "now", real_now)  # another instance, on time
    assert leases.claim(KEY) is None
    expires_at = FillLease.objects.get(pk=lease.pk).expires_at  # as the database holds it
    left = (expires_at - real_now()).total_seconds()
    assert 0 < left <= leases.settings.MIRROR_FILL_LEASE_SECONDS + 1


def test_live_keys_and_sweep(settings) -> None:
    settings.MIRROR_FILL_LEASE_SECONDS = 0.2
    old = leases.claim("old")
    time.sleep(0.3)
    settings.MIRROR_FILL_LEASE_SECONDS = 30
    assert leases.claim("live") is not None
    assert old is not None
    assert leases.live_keys() == {"live"}
    # Expired 0.1 s ago, less than a lease period: its followers may not have looked yet.
    assert leases.sweep_expired() == 0
    settings.MIRROR_FILL_LEASE_SECONDS = 0.2
    time.sleep(0.2)
    assert leases.sweep_expired() == 1
    assert set(FillLease.objects.values_list("key", flat=True)) == {"live"}


def test_holder_tells_live_expired_taken_over_and_released(settings) -> None:
    """What a follower reads in one query: a dead filler's row (expired), a takeover (the
    same row, another owner) and a filler's end (no row) are told apart."""
    settings.MIRROR_FILL_LEASE_SECONDS = 0.2
    assert leases.holder(KEY) is None
    first = leases.claim(KEY)
    assert first is not None and leases.holder(KEY) == (first.owner, True)
    time.sleep(0.3)
    assert leases.holder(KEY) == (first.owner, False)
    second = leases.claim(KEY)
    assert second is not None and second.owner != first.owner
    assert leases.holder(KEY) == (second.owner, True)
    leases.release(second)
    assert leases.holder(KEY) is None


def test_the_periodic_sweep_removes_expired_leases(settings, tmp_path) -> None:
    settings.MIRROR_STORAGE_DIR = str(tmp_path / "storage")
    settings.MIRROR_FILL_LEASE_SECONDS = 0.2
    assert leases.claim("crashed") is not None
    time.sleep(0.5)  # expired, and a lease period more (the followers' grace)
    assert tasks.sweep_fills() >= 1
    assert not FillLease.objects.exists()
