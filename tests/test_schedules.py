"""The default beat schedules (mirror/schedules.py), the always-warm list of the config file
(mirror/config_file.py) and the popular refresh that uses both (mirror.tasks.refresh_popular).

`migrate` is the real command on the test database (its post_migrate signal creates the
schedules). The refresh runs in-process with test-only ecosystems (implementations of the
`Ecosystem` protocol, mirror/ecosystems.py) whose popular lists are chosen here; the real
ones are exercised end to end by the prewarm tests. The test transaction is never committed,
so the job's items are stored but never sent to a broker.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from mirror import ecosystems, schedules
from mirror.config_file import ConfigError, load
from mirror.ecosystems import Finding, InvalidReference, Popular, Progress, Target
from mirror.models import AlwaysWarm, PrewarmJob, Upstream
from mirror.tasks import refresh_popular

pytestmark = pytest.mark.django_db

UPSTREAMS = """
upstreams:
  - {name: hub, kind: oci, url: "http://127.0.0.1:9", prefix: docker.io, default: true}
"""


def _migrate() -> None:
    call_command("migrate", verbosity=0, interactive=False)


def _schedule(task: str) -> PeriodicTask:
    return PeriodicTask.objects.select_related("interval").get(task=task)


def test_default_schedules_exist_after_migrate() -> None:
    refresh = _schedule("mirror.refresh_popular")
    reverify = _schedule("mirror.reverify")
    assert (refresh.name, refresh.enabled) == ("refresh popular", True)
    assert (refresh.interval.every, refresh.interval.period) == (1, IntervalSchedule.HOURS)
    assert (reverify.name, reverify.enabled) == ("re-verify", True)
    assert (reverify.interval.every, reverify.interval.period) == (6, IntervalSchedule.HOURS)


def test_the_default_schedules_name_registered_tasks() -> None:
    from config.celery import app

    app.loader.import_default_modules()  # what a worker does at start (autodiscovery)
    for default in schedules.DEFAULTS:
        assert default.task in app.tasks


def test_an_operators_edits_are_kept_by_the_next_migrate() -> None:
    quarter, _ = IntervalSchedule.objects.get_or_create(every=15, period=IntervalSchedule.MINUTES)
    refresh = _schedule("mirror.refresh_popular")
    refresh.interval = quarter
    refresh.save()
    reverify = _schedule("mirror.reverify")
    reverify.name, reverify.enabled = "nightly check", False
    reverify.save()
    _migrate()
    assert _schedule("mirror.refresh_popular").interval == quarter
    kept = _schedule("mirror.reverify")  # one row only, renamed and disabled
    assert (kept.name, kept.enabled) == ("nightly check", False)
    assert PeriodicTask.objects.filter(task__startswith="mirror.").count() == len(
        schedules.DEFAULTS
    )


def test_a_deleted_default_comes_back_from_the_settings(settings) -> None:
    settings.MIRROR_REVERIFY_EVERY = 2 * 86400
    PeriodicTask.objects.filter(task="mirror.reverify").delete()
    _migrate()
    again = _schedule("mirror.reverify")
    assert (again.name, again.interval.every, again.interval.period) == ("re-verify", 2, "days")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(3600, (1, "hours")), (90, (90, "seconds")), (1800, (30, "minutes")), (86400, (1, "days"))],
)
def test_intervals_use_the_largest_whole_unit(seconds: int, expected: tuple[int, str]) -> None:
    assert schedules.interval(seconds) == expected


def test_an_interval_under_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        schedules.interval(0)


class NamedEcosystem:
    """A test-only ecosystem: `alias` maps short references to normalized ones; references
    under `nowhere/` have no upstream; `popular` returns `top`."""

    def __init__(self, kind: str, alias: dict[str, str], top: list[Popular]) -> None:
        self.kind = kind
        self.alias = alias
        self.top = top
        self.upstream_id = Upstream.objects.get_or_create(
            name="hub", defaults={"kind": "oci", "url": "http://127.0.0.1:9"}
        )[0].pk

    def resolve(self, reference: str) -> Target:
        if reference.startswith("nowhere/"):
            raise InvalidReference("no upstream serves it")
        return Target(self.alias.get(reference, reference), self.upstream_id)

    def warm(self, reference: str, platforms: list[str], refresh: bool, progress: Progress) -> None:
        raise AssertionError("the refresh only queues items")

    def popular(self, since: dt.datetime, limit: int) -> list[Popular]:
        return self.top[:limit]

    def reverify(self, budget_bytes: int) -> list[Finding]:
        return []


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, NamedEcosystem]:
    """Only test ecosystems are registered (kinds image and module)."""
    image = NamedEcosystem(
        "image",
        {"alpine:3.19": "docker.io/library/alpine:3.19"},
        [
            Popular("docker.io/library/alpine:3.19", ("linux/arm64",)),
            Popular("docker.io/library/busybox:1"),
            Popular("nowhere/gone:1"),
        ],
    )
    module = NamedEcosystem("module", {}, [Popular("example.com/m@latest")])
    monkeypatch.setattr(ecosystems, "_registry", {"image": image, "module": module})
    return {"image": image, "module": module}


def _write(tmp_path: Path, always_warm: str) -> Path:
    path = tmp_path / "mirror.yml"
    path.write_text(UPSTREAMS + always_warm)
    return path


ALWAYS_WARM = """
always_warm:
  - image: alpine:3.19
    platforms: [linux/amd64]
  - image: ghcr.io/acme/tool:v1
  - module: golang.org/x/mod@latest
    enabled: false
"""


def _rows() -> dict[tuple[str, str], tuple[list[str], bool]]:
    return {(r.kind, r.reference): (r.platforms, r.enabled) for r in AlwaysWarm.objects.all()}


def test_always_warm_entries_are_loaded_and_printed(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("load_mirror_config", str(_write(tmp_path, ALWAYS_WARM)), stdout=out)
    assert _rows() == {
        ("image", "alpine:3.19"): (["linux/amd64"], True),
        ("image", "ghcr.io/acme/tool:v1"): ([], True),
        ("module", "golang.org/x/mod@latest"): ([], False),
    }
    lines = out.getvalue().splitlines()
    assert "always-warm image: alpine:3.19 linux/amd64" in lines
    assert "always-warm image: ghcr.io/acme/tool:v1 all platforms" in lines
    assert "always-warm module: golang.org/x/mod@latest (disabled)" in lines


def test_reloading_upserts_and_leaves_other_rows_alone(tmp_path: Path) -> None:
    load(_write(tmp_path, ALWAYS_WARM))
    AlwaysWarm.objects.create(kind="image", reference="added/in-admin:1")
    AlwaysWarm.objects.filter(reference="ghcr.io/acme/tool:v1").update(enabled=False)
    load(_write(tmp_path, "always_warm:\n  - {image: alpine:3.19, platforms: all}\n"))
    assert _rows() == {
        ("image", "alpine:3.19"): ([], True),  # platforms given again: all
        ("image", "ghcr.io/acme/tool:v1"): ([], False),  # not in the file: as the admin left it
        ("module", "golang.org/x/mod@latest"): ([], False),
        ("image", "added/in-admin:1"): ([], True),
    }


def test_references_no_upstream_serves_are_kept_with_a_warning(
    tmp_path: Path, fakes: dict[str, NamedEcosystem]
) -> None:
    err = io.StringIO()
    path = _write(tmp_path, "always_warm:\n  - image: nowhere/x:1\n  - image: alpine:3.19\n")
    call_command("load_mirror_config", str(path), stdout=io.StringIO(), stderr=err)
    assert err.getvalue().splitlines() == [
        "warning: always-warm image nowhere/x:1: no upstream serves it"
    ]
    assert set(_rows()) == {("image", "nowhere/x:1"), ("image", "alpine:3.19")}


@pytest.mark.parametrize(
    ("always_warm", "message"),
    [
        ("always_warm: {image: alpine}", "must be a list"),
        ("always_warm:\n  - alpine:3.19", "is not a mapping"),
        ("always_warm:\n  - {image: alpine, module: m@latest}", "exactly one of"),
        ("always_warm:\n  - {platforms: [linux/amd64]}", "exactly one of"),
        ("always_warm:\n  - {chart: x}", "exactly one of"),
        ("always_warm:\n  - {image: alpine, tag: x}", "unknown fields for image ['tag']"),
        ("always_warm:\n  - {module: m@latest, platforms: all}", "unknown fields for module"),
        ("always_warm:\n  - {image: ''}", "must be a reference"),
        ("always_warm:\n  - {image: 7}", "must be a reference"),
        ("always_warm:\n  - {image: 'alpine 3'}", "contains spaces"),
        ("always_warm:\n  - {image: alpine, platforms: [linux]}", "not os/arch"),
        ("always_warm:\n  - {image: alpine, platforms: []}", "'all' or a list"),
        ("always_warm:\n  - {image: alpine, enabled: 'no'}", "true or false"),
        ("always_warm:\n  - {image: alpine}\n  - {image: alpine}", "must be unique"),
        ("always_warm: [", "not valid YAML"),
    ],
)
def test_bad_always_warm_entries_are_refused(
    tmp_path: Path, always_warm: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(_write(tmp_path, always_warm))
    assert message in str(caught.value)
    assert not Upstream.objects.exists() and not AlwaysWarm.objects.exists()  # nothing saved


def test_refresh_queues_always_warm_and_popular_once_each(
    fakes: dict[str, NamedEcosystem],
) -> None:
    AlwaysWarm.objects.create(kind="image", reference="alpine:3.19", platforms=["linux/amd64"])
    AlwaysWarm.objects.create(kind="image", reference="tool:v1", enabled=False)
    AlwaysWarm.objects.create(kind="module", reference="example.com/m@latest")
    AlwaysWarm.objects.create(kind="module", reference="nowhere/m@v1.0.0")
    job = PrewarmJob.objects.get(pk=refresh_popular())
    assert (job.source, job.requested_by, job.refresh) == ("schedule", "schedule", True)
    items = {(i.kind, i.reference): i.platforms for i in job.items.all()}
    assert items == {
        # "alpine:3.19" (always warm) and its normalized name (popular) are one item, for
        # the platforms of both
        ("image", "docker.io/library/alpine:3.19"): ["linux/amd64", "linux/arm64"],
        ("module", "example.com/m@latest"): [],  # always warm and popular
        ("image", "docker.io/library/busybox:1"): [],
    }


def test_a_popular_reference_for_all_platforms_stays_all(
    fakes: dict[str, NamedEcosystem],
) -> None:
    fakes["image"].top = [Popular("docker.io/library/alpine:3.19")]
    AlwaysWarm.objects.create(kind="image", reference="alpine:3.19", platforms=["linux/amd64"])
    job = PrewarmJob.objects.get(pk=refresh_popular())
    assert [(i.reference, i.platforms) for i in job.items.filter(kind="image")] == [
        ("docker.io/library/alpine:3.19", [])
    ]


def test_nothing_to_refresh_makes_no_job(fakes: dict[str, NamedEcosystem]) -> None:
    fakes["image"].top = [Popular("nowhere/a:1")]
    fakes["module"].top = []
    assert refresh_popular() is None
    assert not PrewarmJob.objects.exists()
