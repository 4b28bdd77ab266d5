"""Upstream budgets (mirror/budgets.py): what Docker Hub's ratelimit headers and a 429 make
of an upstream's budget, shared through the database."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from mirror import budgets
from mirror.models import Upstream, UpstreamBudget

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstream_id(settings) -> int:
    settings.MIRROR_BUDGET_RESERVE = 10
    settings.MIRROR_PREWARM_MAX_BACKOFF = 600
    budgets._written.clear()
    return Upstream.objects.create(name="hub", kind="oci", url="https://hub.test").pk


def _hub(remaining: int) -> dict[str, str]:
    return {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": f"{remaining};w=21600"}


def test_docker_hub_headers_are_recorded(upstream_id: int) -> None:
    budgets.observe(upstream_id, 200, _hub(76))
    budget = UpstreamBudget.objects.get(upstream_id=upstream_id)
    assert (budget.limit, budget.remaining, budget.window_seconds) == (100, 76, 21600)
    assert not budgets.is_low(upstream_id)


def test_under_the_reserve_the_budget_is_low_until_the_window_ends(upstream_id: int) -> None:
    budgets.observe(upstream_id, 200, _hub(3))
    assert budgets.is_low(upstream_id)
    assert budgets.defer_seconds(upstream_id) == 600  # the window's rest, capped
    UpstreamBudget.objects.filter(upstream_id=upstream_id).update(
        updated=timezone.now() - dt.timedelta(seconds=21601)
    )
    assert not budgets.is_low(upstream_id)  # that window has passed


def test_a_429_blocks_for_its_retry_after_only(upstream_id: int) -> None:
    budgets.observe(upstream_id, 429, {}, retry_after=30)
    wait = budgets.defer_seconds(upstream_id)
    assert 28 < wait <= 30
    budget = UpstreamBudget.objects.get(upstream_id=upstream_id)
    assert budget.remaining is None  # no headers: nothing claimed about the window
    UpstreamBudget.objects.filter(upstream_id=upstream_id).update(
        blocked_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert not budgets.is_low(upstream_id)


def test_another_processs_write_is_corrected_soon(upstream_id: int) -> None:
    budgets.observe(upstream_id, 200, _hub(90))
    UpstreamBudget.objects.filter(upstream_id=upstream_id).update(remaining=5)  # elsewhere
    budgets.observe(upstream_id, 200, _hub(90))  # unchanged here: no write yet
    assert UpstreamBudget.objects.get(upstream_id=upstream_id).remaining == 5
    budgets._written[upstream_id] = (budgets._written[upstream_id][0], 0.0)  # time passes
    budgets.observe(upstream_id, 200, _hub(90))
    assert UpstreamBudget.objects.get(upstream_id=upstream_id).remaining == 90


@pytest.mark.parametrize("value", ["", "abc", "-5", ";w=60"])
def test_answers_without_a_usable_budget_change_nothing(upstream_id: int, value: str) -> None:
    budgets.observe(upstream_id, 200, {"ratelimit-remaining": value})
    assert not UpstreamBudget.objects.filter(upstream_id=upstream_id).exists()
    assert not budgets.is_low(upstream_id)
