"""The prewarm runner (mirror/prewarm.py) on its own: job status derived from its items',
retries with backoff (or the upstream's Retry-After), per-upstream slots, cancel, and
idempotent items, with the real database (leases, rows) and real threads.

The ecosystem here is a test-only implementation of the `Ecosystem` protocol
(mirror/ecosystems.py), registered for these tests: a legitimate fake of a protocol whose
real implementations (images, modules) are tested end to end elsewhere. Its `warm` runs a
script per reference, so each fault the runner must handle is shown exactly.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from django.db import connection
from django.utils import timezone

from mirror import ecosystems, leases, prewarm
from mirror.ecosystems import Finding, InvalidReference, Popular, Progress, Target
from mirror.errors import UpstreamNotFound, UpstreamUnavailable
from mirror.models import FillLease, PrewarmItem, PrewarmJob, Upstream, UpstreamBudget

pytestmark = pytest.mark.django_db(transaction=True)

Job = PrewarmJob.Status
Item = PrewarmItem.Status
Script = Callable[[Progress], None]


class ScriptedEcosystem:
    """References are `UPSTREAM/NAME`; `scripts[reference]` is what warming it does."""

    kind = "scripted"

    def __init__(self, upstreams: dict[str, int]) -> None:
        self.upstreams = upstreams
        self.scripts: dict[str, Script] = {}
        self.calls: Counter[str] = Counter()

    def resolve(self, reference: str) -> Target:
        upstream, _, name = reference.partition("/")
        if upstream not in self.upstreams or not name:
            raise InvalidReference("no upstream serves it")
        return Target(reference, self.upstreams[upstream])

    def warm(self, reference: str, platforms: list[str], refresh: bool, progress: Progress) -> None:
        self.calls[reference] += 1
        self.scripts.get(reference, lambda progress: None)(progress)

    def popular(self, since: dt.datetime, limit: int) -> list[Popular]:
        return []

    def reverify(self, budget_bytes: int) -> list[Finding]:
        return []


@pytest.fixture
def eco(monkeypatch: pytest.MonkeyPatch) -> ScriptedEcosystem:
    ids = {
        name: Upstream.objects.create(name=name, kind="oci", url=f"http://{name}.invalid").pk
        for name in ("one", "two")
    }
    ecosystem = ScriptedEcosystem(ids)
    monkeypatch.setitem(ecosystems._registry, ecosystem.kind, ecosystem)
    return ecosystem


@pytest.fixture(autouse=True)
def _no_slot_left_behind() -> Iterator[None]:
    """Every slot an item took is given back, whatever the item's end."""
    yield
    assert not FillLease.objects.filter(key__startswith="prewarm-slot:").exists()


def _job(*references: str) -> tuple[PrewarmJob, list[int]]:
    specs = [prewarm.ItemSpec(ScriptedEcosystem.kind, r) for r in references]
    job = prewarm.create_job(specs, source="cli", enqueue=False)
    return job, list(job.items.order_by("pk").values_list("pk", flat=True))


def _fail(error: Exception) -> Script:
    def script(progress: Progress) -> None:
        raise error

    return script


def _status(job: PrewarmJob) -> str:
    job.refresh_from_db()
    return job.status


def _item(pk: int) -> PrewarmItem:
    return PrewarmItem.objects.get(pk=pk)


def _wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _in_thread(target: Callable[[], object]) -> threading.Thread:
    """Run `target` as a worker would, in a thread with its own database connection."""

    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_job_status_follows_its_items(eco: ScriptedEcosystem) -> None:
    eco.scripts["one/missing"] = _fail(UpstreamNotFound("manifest unknown"))
    job, (ok, missing) = _job("one/ok", "one/missing")
    assert _status(job) == Job.QUEUED and job.started is None
    assert prewarm.run_item(ok) is None
    assert _status(job) == Job.RUNNING and job.started is not None and job.finished is None
    assert prewarm.run_item(missing) is None
    assert _status(job) == Job.PARTIAL and job.finished is not None
    assert _item(ok).status == Item.SUCCEEDED
    assert (_item(missing).status, _item(missing).error) == (Item.FAILED, "manifest unknown")


@pytest.mark.parametrize(
    ("references", "expected"),
    [(["one/a", "two/b"], Job.SUCCEEDED), (["one/bad1", "two/bad2"], Job.FAILED)],
)
def test_job_ends_succeeded_or_failed(
    eco: ScriptedEcosystem, references: list[str], expected: str
) -> None:
    for reference in ("one/bad1", "two/bad2"):
        eco.scripts[reference] = _fail(UpstreamNotFound("gone"))
    job, items = _job(*references)
    for pk in items:
        assert prewarm.run_item(pk) is None
    assert _status(job) == expected


def test_a_bad_reference_stores_no_job(eco: ScriptedEcosystem) -> None:
    with pytest.raises(prewarm.JobInvalid) as caught:
        _job("one/fine", "elsewhere/x")
    assert caught.value.errors == {"scripteds": ["elsewhere/x: no upstream serves it"]}
    assert not PrewarmJob.objects.exists()


def test_an_empty_job_has_ended() -> None:
    job = prewarm.create_job([], source="api", enqueue=False)
    assert _status(job) == Job.SUCCEEDED and job.finished is not None


def _when_due(pk: int) -> float | None:
    """Run the item as its scheduled task does: once its `not_before` has come."""
    PrewarmItem.objects.filter(pk=pk).update(not_before=None)
    return prewarm.run_item(pk)


def test_a_task_before_its_items_time_is_a_duplicate(eco: ScriptedEcosystem) -> None:
    _, (pk,) = _job("one/later")
    PrewarmItem.objects.filter(pk=pk).update(not_before=timezone.now() + dt.timedelta(seconds=30))
    assert prewarm.run_item(pk) is None
    assert eco.calls["one/later"] == 0 and _item(pk).status == Item.QUEUED


def test_retries_back_off_then_give_up(eco: ScriptedEcosystem, settings) -> None:
    settings.MIRROR_PREWARM_RETRIES = 3
    settings.MIRROR_PREWARM_BACKOFF = 5
    settings.MIRROR_PREWARM_MAX_BACKOFF = 12
    eco.scripts["one/flaky"] = _fail(UpstreamUnavailable("upstream answered 503"))
    job, (pk,) = _job("one/flaky")
    for expected in (5, 10, 12):  # 5 * 2**n, capped at MAX_BACKOFF
        before = timezone.now()
        assert _when_due(pk) == expected
        item = _item(pk)
        assert item.status == Item.QUEUED and "503" in item.error
        assert item.not_before is not None
        assert before + dt.timedelta(seconds=expected - 1) < item.not_before
        assert _status(job) == Job.RUNNING  # it has started, and waits
    assert _when_due(pk) is None  # the 4th attempt is past RETRIES: it gives up
    item = _item(pk)
    assert item.status == Item.FAILED and item.error.startswith("gave up after 4 attempts")
    assert item.not_before is None and eco.calls["one/flaky"] == 4
    assert _status(job) == Job.FAILED


def test_retry_after_is_honoured_then_success(eco: ScriptedEcosystem, settings) -> None:
    settings.MIRROR_PREWARM_MAX_BACKOFF = 600
    answers = iter([UpstreamUnavailable("429 Too Many Requests", retry_after=42)])

    def script(progress: Progress) -> None:
        if (error := next(answers, None)) is not None:
            raise error

    eco.scripts["one/limited"] = script
    job, (pk,) = _job("one/limited")
    assert prewarm.run_item(pk) == 42
    assert _when_due(pk) is None
    item = _item(pk)
    assert (item.status, item.attempts, item.error) == (Item.SUCCEEDED, 2, "")
    assert _status(job) == Job.SUCCEEDED


def test_an_ended_item_is_left_alone(eco: ScriptedEcosystem) -> None:
    """A task delivered twice (late acks after a worker died) does no harm."""
    _, (pk,) = _job("one/once")
    assert prewarm.run_item(pk) is None
    assert prewarm.run_item(pk) is None
    assert eco.calls["one/once"] == 1 and _item(pk).attempts == 1
    assert prewarm.run_item(999_999) is None  # an item that no longer exists


def test_an_upstream_short_of_budget_defers_items(eco: ScriptedEcosystem, settings) -> None:
    settings.MIRROR_BUDGET_RESERVE = 10
    UpstreamBudget.objects.create(
        upstream_id=eco.upstreams["one"],
        limit=100,
        remaining=3,
        window_seconds=60,
        updated=timezone.now(),
    )
    _, (pk,) = _job("one/later")
    wait = prewarm.run_item(pk)
    assert wait is not None and 50 < wait <= 60
    item = _item(pk)
    assert item.status == Item.QUEUED and "budget" in item.error and item.attempts == 0
    assert eco.calls["one/later"] == 0


def test_one_slot_per_upstream(eco: ScriptedEcosystem, settings) -> None:
    settings.MIRROR_PREWARM_PER_UPSTREAM = 1
    release = threading.Event()
    eco.scripts["one/slow"] = lambda progress: release.wait(10)
    job, (slow, queued, other) = _job("one/slow", "one/next", "two/other")
    worker = _in_thread(lambda: prewarm.run_item(slow))
    try:
        _wait_for(lambda: _item(slow).status == Item.RUNNING)
        assert prewarm.run_item(queued) == prewarm.SLOT_POLL  # upstream one is busy
        assert eco.calls["one/next"] == 0 and _item(queued).status == Item.QUEUED
        assert prewarm.run_item(other) is None  # upstream two has its own slot
        assert _item(other).status == Item.SUCCEEDED
    finally:
        release.set()
        worker.join(10)
    assert _item(slow).status == Item.SUCCEEDED
    assert _when_due(queued) is None  # the slot was given back
    assert _item(queued).status == Item.SUCCEEDED and _status(job) == Job.SUCCEEDED


def test_cancel_stops_running_and_queued_items(eco: ScriptedEcosystem) -> None:
    def endless(progress: Progress) -> None:
        progress.add_total(1_000_000)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a long download, chunk by chunk
            progress.add_done(1000)
            progress.check()
            time.sleep(0.01)

    eco.scripts["one/long"] = endless
    job, (long, waiting) = _job("one/long", "two/waiting")
    worker = _in_thread(lambda: prewarm.run_item(long))
    _wait_for(lambda: _item(long).bytes_done > 0)
    cancelled_at = time.monotonic()
    prewarm.cancel(job)
    assert _item(waiting).status == Item.CANCELLED  # a queued item ends at once
    worker.join(10)
    assert time.monotonic() - cancelled_at < 2 * prewarm.PROGRESS_EVERY + 1
    item = _item(long)
    assert item.status == Item.CANCELLED and item.finished is not None
    assert 0 < item.bytes_done < item.bytes_total == 1_000_000
    assert _status(job) == Job.CANCELLED and job.finished is not None
    assert prewarm.run_item(waiting) is None and eco.calls["two/waiting"] == 0


def test_an_unexpected_error_fails_the_item_only(eco: ScriptedEcosystem) -> None:
    eco.scripts["one/bug"] = _fail(KeyError("internal detail"))
    job, (bug, fine) = _job("one/bug", "one/fine")
    assert prewarm.run_item(bug) is None
    assert prewarm.run_item(fine) is None
    assert _item(bug).error == "internal error: KeyError"  # no internals shown to users
    assert _status(job) == Job.PARTIAL


def test_stalled_items_are_found_for_the_requeue(eco: ScriptedEcosystem) -> None:
    """What `mirror.requeue_stalled` sends again: items overdue in the queue, and running
    items whose runner's lease is gone; not items waiting their turn or running alive."""
    _, (overdue, waiting, dead, alive) = _job("one/a", "one/b", "one/c", "two/d")
    past = timezone.now() - dt.timedelta(seconds=600)
    PrewarmItem.objects.filter(pk=overdue).update(not_before=past)
    PrewarmItem.objects.filter(pk=waiting).update(not_before=timezone.now())
    PrewarmItem.objects.filter(pk__in=[dead, alive]).update(status=Item.RUNNING, started=past)
    lease = leases.claim(f"prewarm-item:{alive}")
    assert lease is not None
    assert sorted(prewarm.stalled_items(300)) == [overdue, dead]
