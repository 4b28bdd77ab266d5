"""Freshness control of cached OCI tags, end to end: tag history, pins, refresh now, purge and
the upstream's rate-limit budget, against the real registry behind a FaultProxy, the mirror
under gunicorn, and the REST API with an admin token.

The `hub` upstream of the session's mirror trusts a tag for 1 s (tag_ttl 1): tests that need
a tag past its TTL wait that second out (time passing is the condition, nothing to poll);
`ghcr` keeps the default 300 s, for "within the TTL". Budget tests give the budget back
before they end (`hub_budget`), so that a low budget never leaks into other tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from mirror.digests import storage_key
from mirror.models import PrewarmJob, Upstream
from mirror.upstreams import forget
from registries.models import Repository, Tag, TagHistory, TagPin
from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.faultproxy import FaultProxy
from tests.support.images import Layout, inspect_raw, push

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ALL_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
TTL_PASSED = 1.3  # seconds: past the hub upstream's tag_ttl of 1 s
UNKNOWN_DIGEST = "sha256:" + "0" * 64


def manifest(
    server: MirrorServer, name: str, tag: str, *, method: str = "GET", accept: str = ALL_TYPES
) -> httpx.Response:
    response = httpx.request(
        method, f"{server.url}/v2/{name}/manifests/{tag}", headers={"Accept": accept}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response


def layer(layout: Layout) -> str:
    return next(iter(layout.layer_digests.values()))[0]


@pytest.fixture(scope="module")
def api(mirror: MirrorServer) -> Iterator[httpx.Client]:
    token = mirror.manage("mirror_token", "create", "freshness-tests", "--scope", "admin")
    headers = {"Authorization": f"Bearer {token.strip().splitlines()[-1]}"}
    with httpx.Client(base_url=f"{mirror.url}/api/v1", headers=headers, timeout=30) as client:
        yield client


def tag_entry(api: httpx.Client, repository_name: str, tag: str) -> dict:
    """The API's entry for a tag, by the name clients pull."""
    found = api.get("/tags/", params={"search": repository_name.rsplit("/", 1)[-1]})
    assert found.status_code == 200, found.text
    entries = [
        e
        for e in found.json()["results"]
        if e["repository_name"] == repository_name and e["name"] == tag
    ]
    assert len(entries) == 1, found.json()
    return entries[0]


def manifest_requests(proxy: FaultProxy, repository: str) -> int:
    path = f"/v2/{repository}/manifests/"
    return proxy.count("GET", path) + proxy.count("HEAD", path)


def test_history_keeps_each_digest_with_first_and_last_seen(
    mirror: MirrorServer, upstreams: Upstreams, api: httpx.Client
) -> None:
    first = upstreams.seed("library/freshhist:1")
    assert manifest(mirror, "freshhist", "1").headers["Docker-Content-Digest"] == first.digest
    second = upstreams.seed("library/freshhist:1")
    time.sleep(TTL_PASSED)
    assert manifest(mirror, "freshhist", "1").headers["Docker-Content-Digest"] == second.digest
    time.sleep(TTL_PASSED)
    manifest(mirror, "freshhist", "1", method="HEAD")  # revalidated: same digest seen again

    history = tag_entry(api, "freshhist", "1")["history"]
    assert [h["digest"] for h in history] == [second.digest, first.digest]  # latest first
    newest, oldest = history
    assert oldest["first_seen"] <= oldest["last_seen"] < newest["first_seen"]
    assert newest["first_seen"] < newest["last_seen"]


def test_pin_serves_its_digest_until_unpinned(
    mirror: MirrorServer, upstreams: Upstreams, api: httpx.Client
) -> None:
    pinned = upstreams.seed("library/freshpin:1")
    manifest(mirror, "freshpin", "1")
    entry = tag_entry(api, "freshpin", "1")
    pin_url = f"/tags/{entry['id']}/pin/"

    for bad in ({}, {"digest": "latest"}, {"digest": "sha256:abc"}, {"digest": UNKNOWN_DIGEST}):
        refused = api.post(pin_url, json=bad)
        assert refused.status_code == 400, (bad, refused.text)
        assert "digest" in refused.json()
    answer = api.post(pin_url, json={"digest": pinned.digest})
    assert answer.status_code == 200, answer.text
    assert answer.json()["pinned_digest"] == answer.json()["digest"] == pinned.digest

    moved = upstreams.seed("library/freshpin:1")
    time.sleep(TTL_PASSED)
    upstreams.hub.reset()
    for accept in (ALL_TYPES, OCI_MANIFEST):
        for method in ("GET", "HEAD"):
            got = manifest(mirror, "freshpin", "1", method=method, accept=accept)
            assert got.headers["Docker-Content-Digest"] == pinned.digest
            assert got.headers["X-Cache"] == "HIT"
    raw = inspect_raw(f"{mirror.host}/freshpin:1")  # a real client gets the pin too
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == pinned.digest
    assert manifest_requests(upstreams.hub, "library/freshpin") == 0

    # A refresh learns the upstream's digest and shows it beside the pin; clients keep the pin.
    refreshed = api.post(f"/tags/{entry['id']}/refresh/")
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert (body["digest"], body["pinned_digest"]) == (pinned.digest, pinned.digest)
    assert body["upstream_digest"] == moved.digest
    assert {h["digest"] for h in body["history"]} == {pinned.digest, moved.digest}
    assert manifest(mirror, "freshpin", "1").headers["Docker-Content-Digest"] == pinned.digest

    unpinned = api.post(f"/tags/{entry['id']}/unpin/")
    assert unpinned.status_code == 200 and unpinned.json()["pinned_digest"] is None
    assert manifest(mirror, "freshpin", "1").headers["Docker-Content-Digest"] == moved.digest


def test_refresh_now_of_a_tag_and_a_repository(
    mirror: MirrorServer, upstreams: Upstreams, api: httpx.Client
) -> None:
    name = "ghcr.io/acme/freshrefresh"  # ghcr: the default TTL of 300 s
    old = upstreams.seed("acme/freshrefresh:1")
    assert manifest(mirror, name, "1").headers["Docker-Content-Digest"] == old.digest
    new = upstreams.seed("acme/freshrefresh:1")
    within_ttl = manifest(mirror, name, "1")
    assert (within_ttl.headers["Docker-Content-Digest"], within_ttl.headers["X-Cache"]) == (
        old.digest,
        "HIT",
    )

    entry = tag_entry(api, name, "1")
    refreshed = api.post(f"/tags/{entry['id']}/refresh/")
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["digest"] == refreshed.json()["upstream_digest"] == new.digest
    assert manifest(mirror, name, "1").headers["Docker-Content-Digest"] == new.digest

    newest = upstreams.seed("acme/freshrefresh:1")
    assert manifest(mirror, name, "1").headers["Docker-Content-Digest"] == new.digest
    marked = api.post(f"/repositories/{entry['repository']}/refresh/")
    assert marked.status_code == 200 and marked.json()["marked"] >= 1, marked.text
    assert manifest(mirror, name, "1").headers["Docker-Content-Digest"] == newest.digest

    missing = api.post("/tags/987654321/refresh/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_purge_a_tag_then_the_repository(
    mirror: MirrorServer, upstreams: Upstreams, api: httpx.Client
) -> None:
    kept = upstreams.seed("library/freshpurge:1")
    gone = upstreams.seed("library/freshpurge:2")
    push(kept, f"{upstreams.registry.host}/library/freshshare:1")  # shares kept's blobs
    for repository, tag, layout in (
        ("freshpurge", "1", kept),
        ("freshpurge", "2", gone),
        ("freshshare", "1", kept),
    ):
        manifest(mirror, repository, tag)
        blob = f"/v2/{repository}/blobs/{layer(layout)}"
        assert httpx.get(f"{mirror.url}{blob}", timeout=30).status_code == 200
        mirror.wait_committed(blob)
    storage = mirror.data_dir / "storage" / "objects"  # mirror/storage/local.py
    assert (storage / storage_key(layer(gone))).exists()

    entry = tag_entry(api, "freshpurge", "2")
    assert api.delete(f"/tags/{entry['id']}/").status_code == 204
    missing = api.get(f"/tags/{entry['id']}/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert manifest(mirror, "freshpurge", "2").headers["X-Cache"] == "MISS"

    repository = entry["repository"]
    purged = api.delete(f"/repositories/{repository}/")
    assert purged.status_code == 200, purged.text
    assert purged.json()["tags"] == 2 and purged.json()["blobs_in_use"] == 0
    assert purged.json()["blobs"] == 1  # gone's layer (kept's is shared, no config was pulled)
    assert api.get(f"/repositories/{repository}/").status_code == 404
    assert api.get("/tags/", params={"repository": repository}).json()["count"] == 0
    assert not (storage / storage_key(layer(gone))).exists()
    assert (storage / storage_key(layer(kept))).exists()
    shared = httpx.head(f"{mirror.url}/v2/freshshare/blobs/{layer(kept)}", timeout=30)
    assert shared.headers["X-Cache"] == "HIT"

    # The next pull fetches anew, and works.
    upstreams.hub.reset()
    again = manifest(mirror, "freshpurge", "2")
    assert (again.headers["X-Cache"], again.headers["Docker-Content-Digest"]) == (
        "MISS",
        gone.digest,
    )
    blob = httpx.get(f"{mirror.url}/v2/freshpurge/blobs/{layer(gone)}", timeout=30)
    assert blob.status_code == 200 and blob.headers["X-Cache"] == "MISS"
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer(gone)
    assert upstreams.hub.count("GET", f"/blobs/{layer(gone)}") == 1


def test_api_input_is_validated(api: httpx.Client) -> None:
    for path, params in (
        ("/tags/", {"repository": "x"}),
        ("/tags/", {"repository": "99999999999999999999999"}),
        ("/tags/", {"pinned": "perhaps"}),
        ("/repositories/", {"search": "x" * 300}),
    ):
        assert api.get(path, params=params).status_code == 400, (path, params)
    for path in ("/tags/abc/", "/tags/99999999999999999999999/", "/repositories/0/"):
        answer = api.get(path)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", path
    assert httpx.get(f"{api.base_url}tags/").status_code == 401  # no token


# -- the upstream's budget --------------------------------------------------------------------


_remaining = iter(range(5000, 6000))


@pytest.fixture
def hub_budget(mirror: MirrorServer, upstreams: Upstreams) -> Iterator[FaultProxy]:
    """The hub proxy, for a test that spends the upstream's budget; afterwards the budget is
    given back and the mirror seen revalidating a tag past its TTL again (a probe tag)."""
    upstreams.seed("library/budgetprobe:1")
    manifest(mirror, "budgetprobe", "1")
    yield upstreams.hub
    proxy = upstreams.hub
    proxy.clear_faults()
    # A value never sent before: each server process writes a budget only when it changes.
    remaining = f"{next(_remaining)};w=21600"
    proxy.extra_headers = [("ratelimit-limit", "10000;w=21600"), ("ratelimit-remaining", remaining)]
    deadline = time.monotonic() + 15
    time.sleep(TTL_PASSED)  # the probe is past its TTL: only a budget lets it revalidate
    while True:
        # A tag never seen goes upstream whatever the budget: its answer carries the new one.
        httpx.head(f"{mirror.url}/v2/budgetnever/manifests/{time.monotonic_ns()}", timeout=30)
        if manifest(mirror, "budgetprobe", "1", method="HEAD").headers["X-Cache"] != "STALE":
            break
        assert time.monotonic() < deadline, "the mirror never saw the budget come back"
        time.sleep(0.2)
    proxy.extra_headers = []


def test_low_budget_serves_cached_tags_stale_and_new_ones_fresh(
    mirror: MirrorServer, upstreams: Upstreams, hub_budget: FaultProxy
) -> None:
    old = upstreams.seed("library/budgetold:1")
    manifest(mirror, "budgetold", "1")
    hub_budget.extra_headers = [
        ("ratelimit-limit", "100;w=21600"),
        ("ratelimit-remaining", "5;w=21600"),  # MIRROR_BUDGET_RESERVE is 10
    ]
    first_new = upstreams.seed("library/budgetnew:1")
    assert manifest(mirror, "budgetnew", "1").headers["X-Cache"] == "MISS"  # and seen: 5 left
    upstreams.seed("library/budgetold:1")  # the tag moves upstream
    time.sleep(TTL_PASSED)

    hub_budget.reset()
    for method in ("GET", "HEAD", "GET", "HEAD"):  # both server processes, likely
        stale = manifest(mirror, "budgetold", "1", method=method)
        assert stale.headers["X-Cache"] == "STALE"
        assert stale.headers["Docker-Content-Digest"] == old.digest
    assert manifest_requests(hub_budget, "library/budgetold") == 0

    fresh = upstreams.seed("library/budgetnew:2")
    got = manifest(mirror, "budgetnew", "2")
    assert got.headers["X-Cache"] == "MISS" and got.headers["Docker-Content-Digest"] == fresh.digest
    blob = httpx.get(f"{mirror.url}/v2/budgetnew/blobs/{layer(fresh)}", timeout=30)
    assert blob.status_code == 200
    assert first_new.digest != fresh.digest


def test_429_with_retry_after_serves_cached_tags_stale(
    mirror: MirrorServer, upstreams: Upstreams, hub_budget: FaultProxy
) -> None:
    cached = upstreams.seed("library/budget429:1")
    manifest(mirror, "budget429", "1")
    time.sleep(TTL_PASSED)

    hub_budget.status, hub_budget.retry_after = 429, 2
    limited = httpx.get(f"{mirror.url}/v2/budget429new/manifests/1", timeout=30)
    assert limited.status_code == 429, limited.text
    hub_budget.status = None
    hub_budget.reset()
    for method in ("GET", "HEAD", "GET", "HEAD"):
        stale = manifest(mirror, "budget429", "1", method=method)
        assert stale.headers["X-Cache"] == "STALE"
        assert stale.headers["Docker-Content-Digest"] == cached.digest
    assert manifest_requests(hub_budget, "library/budget429") == 0


# -- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def cached_tag(db: None) -> Tag:
    """A cached tag of the default upstream (unreachable: the admin must not need it) whose
    history knows two digests, the newer one current."""
    hub = Upstream.objects.create(
        name="hub", kind="oci", url="http://127.0.0.1:9", prefix="docker.io", is_default=True
    )
    forget()
    repository = Repository.objects.create(upstream=hub, name="library/freshadmin")
    now = timezone.now()
    for age, digest in ((60, OLD), (1, NEW)):
        seen = now - dt.timedelta(seconds=age)
        TagHistory.objects.create(
            repository=repository, name="1", digest=digest, first_seen=seen, last_seen=seen
        )
    return Tag.objects.create(
        repository=repository,
        name="1",
        accept_key="*",
        digest=NEW,
        media_type=OCI_MANIFEST,
        size=100,
        fetched_at=now,
    )


OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def act(client: Client, model: str, action: str, pk: int) -> str:
    answer = client.post(
        f"/admin/registries/{model}/",
        {"action": action, "_selected_action": [pk]},
        follow=True,
    )
    assert answer.status_code == 200
    return answer.content.decode()


def test_admin_pins_refreshes_prewarms_and_purges(cached_tag: Tag, admin_client: Client) -> None:
    repository = cached_tag.repository
    act(admin_client, "tag", "pin_current", cached_tag.pk)
    assert TagPin.objects.get(repository=repository, name="1").digest == NEW
    act(admin_client, "tag", "unpin", cached_tag.pk)
    assert not TagPin.objects.exists()

    # A pin to an older digest of the history, by the form; one nobody knows is refused.
    refused = admin_client.post(
        "/admin/registries/tagpin/add/",
        {"repository": repository.pk, "name": "1", "digest": UNKNOWN_DIGEST},
    )
    assert refused.status_code == 200 and b"cannot be confirmed now" in refused.content
    added = admin_client.post(
        "/admin/registries/tagpin/add/", {"repository": repository.pk, "name": "1", "digest": OLD}
    )
    assert added.status_code == 302
    assert TagPin.objects.get().digest == OLD
    listing = admin_client.get("/admin/registries/tag/").content.decode()
    assert OLD in listing and NEW in listing  # the pin beside the upstream's current digest
    page = admin_client.get(f"/admin/registries/tag/{cached_tag.pk}/change/").content.decode()
    assert page.count(OLD) >= 2 and NEW in page  # pin and history

    act(admin_client, "repository", "refresh_now", repository.pk)
    cached_tag.refresh_from_db()
    assert timezone.now() - cached_tag.fetched_at > dt.timedelta(seconds=300)

    message = act(admin_client, "repository", "prewarm", repository.pk)
    job = PrewarmJob.objects.get()
    assert (job.source, job.requested_by) == ("admin", "admin")
    assert list(job.items.values_list("reference", flat=True)) == ["freshadmin:1"]
    assert f"/admin/mirror/prewarmjob/{job.pk}/change/" in message

    act(admin_client, "repository", "purge", repository.pk)
    assert not Repository.objects.exists()
    assert not (Tag.objects.exists() or TagPin.objects.exists() or TagHistory.objects.exists())
