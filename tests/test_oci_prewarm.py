"""Prewarm of container images (issue 8), end to end: jobs through the REST API, run by a real
Celery worker on Redis, fetching from the real upstream registry behind fault proxies; then
real clients (podman, skopeo, containerd) pull what was warmed with every upstream stopped.

The mirror here has a long tag TTL, so that counted upstream requests stay countable.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mirror.ecosystems import InvalidReference
from registries import warm
from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.images import Layout
from tests.support.prewarm_env import PrewarmEnv
from tests.test_clients import run, skopeo_copy
from tests.test_containerd import containerd  # noqa: F401 - a fixture

BIG = 2_000_000  # bytes of a layer served slowly: 31 chunks of 64 KiB


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[PrewarmEnv]:
    data = tmp_path_factory.mktemp("prewarm")
    config = data / "mirror.yml"
    config.write_text(
        f"""
upstreams:
  - {{name: hub, kind: oci, url: "{upstreams.hub.url}", prefix: docker.io, default: true,
      tag_ttl: 300}}
  - {{name: ghcr, kind: oci, url: "{upstreams.ghcr.url}", prefix: ghcr.io, tag_ttl: 300}}
"""
    )
    # Beat runs from the start (its default schedules are hours apart); test e adds its own.
    with PrewarmEnv(data / "var", config, beat=True) as started:
        yield started


def blobs_of(layout: Layout, platform: str = "linux/amd64") -> list[str]:
    return [layout.config_digests[platform], *layout.layer_digests[platform]]


def stop_upstreams(upstreams: Upstreams) -> None:
    """Every upstream gone (the autouse fixture of conftest starts them again)."""
    for proxy in (upstreams.hub, upstreams.ghcr, upstreams.corp):
        proxy.stop()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def seconds(item: dict[str, Any]) -> float:
    started, finished = (dt.datetime.fromisoformat(item[k]) for k in ("started", "finished"))
    return (finished - started).total_seconds()


def podman_pull(server: MirrorServer, tmp_path: Path, ref: str, arch: str) -> dict[str, Any]:
    """`podman pull` with the mirror as the registries.conf mirror of docker.io (as a Docker
    Hub user sets it up, see tests/test_clients.py); the pulled image's inspect."""
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run the tests with `make test`", pytrace=False)
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f"""
[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "{server.host}"
insecure = true
"""
    )
    runroot = tempfile.mkdtemp(prefix="pr-")  # podman wants a runroot under 50 characters
    base = ["podman", "--storage-driver", "vfs", "--root", str(tmp_path / "root")]
    base += ["--runroot", runroot, "--events-backend", "none", "--cgroup-manager", "cgroupfs"]
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
    try:
        run(*base, "pull", "-q", "--arch", arch, ref, env=env)
        return json.loads(run(*base, "image", "inspect", ref, env=env))[0]
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def ctr_pull(socket: str, server: MirrorServer, tmp_path: Path, ref: str) -> None:
    """containerd's `ctr images pull` (this host's platform) with the mirror in hosts.toml,
    as tests/test_containerd.py does."""
    hosts = tmp_path / "certs.d" / "docker.io"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "https://127.0.0.1:9"\n\n[host."http://{server.host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    args = ["ctr", "--address", socket, "images", "pull", "--snapshotter", "native"]
    args += ["--hosts-dir", str(tmp_path / "certs.d"), ref]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture
def routes(db: None) -> Iterator[dict[str, int]]:
    """Upstreams in the test database, as pulls route them: hub (docker.io, the default) and
    ghcr (ghcr.io); their ids by name."""
    from mirror import upstreams
    from mirror.models import Upstream

    ids = {
        "hub": Upstream.objects.create(
            name="hub", kind="oci", url="http://hub.invalid", prefix="docker.io", is_default=True
        ).pk,
        "ghcr": Upstream.objects.create(
            name="ghcr", kind="oci", url="http://ghcr.invalid", prefix="ghcr.io"
        ).pk,
    }
    upstreams.forget()
    yield ids
    upstreams.forget()


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("reference", "normalized", "upstream"),
    [
        ("alpine", "alpine:latest", "hub"),
        ("alpine:3.19", "alpine:3.19", "hub"),
        ("library/alpine:3.19", "alpine:3.19", "hub"),
        ("docker.io/library/alpine:3.19", "alpine:3.19", "hub"),
        ("docker.io/bitnami/redis:7", "bitnami/redis:7", "hub"),
        ("ghcr.io/acme/tool:v1", "ghcr.io/acme/tool:v1", "ghcr"),
        (f"nginx@{DIGEST}", f"nginx@{DIGEST}", "hub"),
        (f"ghcr.io/acme/tool:v1@{DIGEST}", f"ghcr.io/acme/tool:v1@{DIGEST}", "ghcr"),
    ],
)
def test_references_are_routed_and_written_as_clients_write_them(
    routes: dict[str, int], reference: str, normalized: str, upstream: str
) -> None:
    target = warm.ImageEcosystem().resolve(reference)
    assert (target.reference, target.upstream_id) == (normalized, routes[upstream])


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("", "1 to 512 characters"),
        ("Alpine:3.19", "invalid repository name"),
        ("localhost:5000/alpine:1", "invalid repository name"),
        ("alpine:bad!tag", "invalid tag"),
        ("alpine:", "invalid tag"),
        ("nginx@sha256:123", "digest"),
        ("nginx@", "digest"),
    ],
)
def test_bad_references_are_refused_with_a_reason(
    routes: dict[str, int], reference: str, message: str
) -> None:
    with pytest.raises(InvalidReference, match=message):
        warm.ImageEcosystem().resolve(reference)


@pytest.mark.django_db
def test_a_name_no_upstream_serves_is_refused() -> None:
    from mirror import upstreams

    upstreams.forget()
    with pytest.raises(InvalidReference, match="no upstream serves this name"):
        warm.ImageEcosystem().resolve("alpine:3.19")


@pytest.mark.parametrize(
    ("platform", "descriptor", "matches"),
    [
        ("linux/amd64", {"os": "linux", "architecture": "amd64"}, True),
        ("linux/amd64", {"os": "linux", "architecture": "arm64"}, False),
        ("linux/x86_64", {"os": "linux", "architecture": "amd64"}, True),
        ("linux/arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"}, True),
        ("linux/arm64/v8", {"os": "linux", "architecture": "arm64"}, True),
        ("linux/arm/v7", {"os": "linux", "architecture": "arm", "variant": "v6"}, False),
        ("linux/arm", {"os": "linux", "architecture": "arm", "variant": "v6"}, True),
        ("windows/amd64", {"os": "linux", "architecture": "amd64"}, False),
    ],
)
def test_platforms_match_index_descriptors(
    platform: str, descriptor: dict[str, str], matches: bool
) -> None:
    assert warm.parse_platform(platform).matches(descriptor) is matches


@pytest.mark.parametrize("platform", ["linux", "linux/", "/amd64", "linux/amd64/v8/x", "a b/c"])
def test_bad_platforms_are_refused(platform: str) -> None:
    with pytest.raises(InvalidReference, match="expected os/architecture"):
        warm.parse_platform(platform)


def test_a_job_warms_one_platform_and_clients_pull_it_with_every_upstream_stopped(
    env: PrewarmEnv,
    upstreams: Upstreams,
    tmp_path: Path,
    containerd: str,  # noqa: F811
) -> None:
    multi = upstreams.seed(
        "library/pwmulti:1",
        platforms=[("linux", "amd64"), ("linux", "arm64")],
        layer_sizes=[300_000, 100_000],
    )
    single = upstreams.seed("acme/pwsingle:latest", layer_sizes=[200_000])
    upstreams.hub.reset()
    upstreams.ghcr.reset()

    job = env.prewarm(
        images=["docker.io/library/pwmulti:1", "ghcr.io/acme/pwsingle"],
        platforms=["linux/amd64"],
    )
    # References are stored as clients of this mirror write them.
    assert [item["reference"] for item in job["items"]] == [
        "pwmulti:1",
        "ghcr.io/acme/pwsingle:latest",
    ]
    job = env.wait_job(job["id"])
    assert job["status"] == "succeeded", job
    for item, layout in zip(job["items"], (multi, single), strict=True):
        total = sum(layout.blob_sizes[d] for d in blobs_of(layout))
        assert item["status"] == "succeeded"
        assert item["bytes_done"] == item["bytes_total"] == total, item
    for digest in blobs_of(multi):
        assert upstreams.hub.count("GET", f"/blobs/{digest}") == 1
    for digest in blobs_of(multi, "linux/arm64"):
        assert upstreams.hub.count("GET", f"/blobs/{digest}") == 0
        assert upstreams.hub.count("HEAD", f"/blobs/{digest}") == 0
    assert upstreams.hub.count("GET", f"/manifests/{multi.manifest_digests['linux/arm64']}") == 0

    stop_upstreams(upstreams)
    inspect = podman_pull(env.server, tmp_path, "docker.io/library/pwmulti:1", "amd64")
    assert inspect["Architecture"] == "amd64"
    assert inspect["RootFS"]["Layers"] and len(inspect["RootFS"]["Layers"]) == 2
    skopeo_copy(env.server, "ghcr.io/acme/pwsingle:latest", tmp_path / "single")
    index = json.loads((tmp_path / "single/index.json").read_text())
    assert index["manifests"][0]["digest"] == single.digest
    ctr_pull(containerd, env.server, tmp_path, "docker.io/library/pwmulti:1")

    # Pulls are counted (for the popular refresh), the prewarm was not: podman's GET of the
    # tag is its one pull (containerd asked with HEAD).
    def pulls() -> list[int]:
        tags = env.api("GET", "/api/v1/tags/?search=pwmulti").json()["results"]
        return [tag["pull_count"] for tag in tags]

    wait_for(lambda: pulls() != [0], 10, "the pull counted")
    assert pulls() == [1]


def test_b_a_prewarm_racing_a_client_pull_fetches_the_blob_once(
    env: PrewarmEnv, upstreams: Upstreams
) -> None:
    first = upstreams.seed("library/pwrace:1", layer_sizes=[BIG])
    second = upstreams.seed("library/pwrace:2", layer_sizes=[BIG])
    layer1, layer2 = first.layer_digests["linux/amd64"][0], second.layer_digests["linux/amd64"][0]
    upstreams.hub.reset()
    upstreams.hub.delay_per_chunk = 0.05  # about 1.5 s for a big layer

    # The prewarm's fill (in the worker) is under way when a client asks for the blob.
    job = env.prewarm(images=["pwrace:1"])
    wait_for(lambda: upstreams.hub.count("GET", f"/blobs/{layer1}") == 1, 30, "prewarm fill")
    response = httpx.get(f"{env.server.url}/v2/pwrace/blobs/{layer1}", timeout=60)
    assert response.content == first.blob_bytes(layer1)
    assert response.headers["X-Cache"] == "MISS"  # it followed the fill in progress
    assert env.wait_job(job["id"])["status"] == "succeeded"

    # A client's fill (in the server) is under way when a prewarm asks for the blob.
    accept = ", ".join(warm.CONTAINERS_IMAGE_ACCEPT)
    url = f"{env.server.url}/v2/pwrace/manifests/2"
    assert httpx.get(url, headers={"Accept": accept}, timeout=30).is_success
    pulled: list[tuple[bytes, dt.datetime]] = []

    def pull() -> None:
        response = httpx.get(f"{env.server.url}/v2/pwrace/blobs/{layer2}", timeout=60)
        pulled.append((response.content, dt.datetime.now(dt.UTC)))

    client = threading.Thread(target=pull)
    client.start()
    wait_for(lambda: upstreams.hub.count("GET", f"/blobs/{layer2}") == 1, 30, "client fill")
    job = env.wait_job(env.prewarm(images=["pwrace:2"])["id"])
    client.join(60)
    assert job["status"] == "succeeded", job
    item = job["items"][0]
    assert item["bytes_done"] == item["bytes_total"]
    [(body, pulled_at)] = pulled
    assert body == second.blob_bytes(layer2)
    assert dt.datetime.fromisoformat(item["started"]) < pulled_at  # they overlapped

    assert upstreams.hub.count("GET", f"/blobs/{layer1}") == 1
    assert upstreams.hub.count("GET", f"/blobs/{layer2}") == 1


def test_c_cancel_stops_a_running_job_mid_blob(env: PrewarmEnv, upstreams: Upstreams) -> None:
    layout = upstreams.seed("library/pwcancel:1", layer_sizes=[2 * BIG])
    upstreams.hub.delay_per_chunk = 0.2  # the layer alone takes over 12 s
    began = time.monotonic()
    job = env.prewarm(images=["pwcancel:1"])
    env.wait_job(job["id"], until=lambda j: j["items"][0]["bytes_done"] > 0, timeout=30)
    layer = layout.layer_digests["linux/amd64"][0]
    assert upstreams.hub.count("GET", f"/blobs/{layer}") == 1  # under way

    env.cancel(job["id"])
    job = env.wait_job(job["id"], timeout=10)
    assert time.monotonic() - began < 8
    assert job["status"] == "cancelled", job
    item = job["items"][0]
    assert item["status"] == "cancelled"
    assert 0 < item["bytes_done"] < item["bytes_total"]


def test_d_a_job_for_cached_content_finishes_in_milliseconds(
    env: PrewarmEnv, upstreams: Upstreams
) -> None:
    upstreams.seed(
        "library/pwcached:1",
        platforms=[("linux", "amd64"), ("linux", "arm64")],
        layer_sizes=[500_000, 10_000],
    )
    first = env.wait_job(env.prewarm(images=["pwcached:1"])["id"])
    assert first["status"] == "succeeded", first
    upstreams.hub.reset()

    again = env.wait_job(env.prewarm(images=["pwcached:1"])["id"])
    assert again["status"] == "succeeded", again
    item = again["items"][0]
    assert item["bytes_done"] == item["bytes_total"] == first["items"][0]["bytes_total"]
    assert seconds(item) < 0.5, item  # about 0.05 s here, 0.1 s on a busy machine
    assert upstreams.hub.requests == []

    elsewhere = env.wait_job(env.prewarm(images=["pwcached:1"], platforms=["linux/s390x"])["id"])
    assert elsewhere["status"] == "failed"
    assert elsewhere["items"][0]["error"] == (
        "no image for the platforms asked; the index has linux/amd64, linux/arm64"
    )


def test_e_beat_refreshes_always_warm_and_popular_tags(
    env: PrewarmEnv, upstreams: Upstreams
) -> None:
    old = upstreams.seed("library/pwmoved:1", layer_sizes=[100_000])
    # A popular tag: a client pulled its index and the arm64 image from it (no blobs).
    popular = upstreams.seed(
        "library/pwpopular:1", platforms=[("linux", "amd64"), ("linux", "arm64")]
    )
    accept = {"Accept": ", ".join(warm.CONTAINERS_IMAGE_ACCEPT)}
    for reference in ("1", popular.manifest_digests["linux/arm64"]):
        url = f"{env.server.url}/v2/pwpopular/manifests/{reference}"
        assert httpx.get(url, headers=accept, timeout=30).is_success
    upstreams.hub.reset()
    env.shell(
        "from django_celery_beat.models import IntervalSchedule, PeriodicTask;"
        "from mirror.models import AlwaysWarm;"
        "AlwaysWarm.objects.create(kind='image', reference='pwmoved:1');"
        "every, _ = IntervalSchedule.objects.get_or_create(every=1, period='seconds');"
        "PeriodicTask.objects.create(name='test refresh', task='mirror.refresh_popular',"
        " interval=every)"
    )
    try:
        old_layer = old.layer_digests["linux/amd64"][0]
        wait_for(lambda: upstreams.hub.count("GET", f"/blobs/{old_layer}") == 1, 30, "warm")
        new = upstreams.seed("library/pwmoved:1", layer_sizes=[100_000])
        for digest in blobs_of(new):
            fetched = f"/blobs/{digest}"
            wait_for(lambda p=fetched: upstreams.hub.count("GET", p) == 1, 30, fetched)
        # Every Accept list's answer moved (a refresh that began before the push may have
        # moved one of them only; the next one moves the other).
        wait_for(
            lambda: (
                env.shell(
                    "from registries.models import Tag;"
                    "print(sorted(set(Tag.objects.filter(repository__name='library/pwmoved',"
                    " name='1').values_list('digest', flat=True))))"
                )
                == repr([new.digest])
            ),
            15,
            "the tag points to the new digest",
        )
    finally:
        env.shell(  # delete(), not a queryset update: the running beat hears of it
            "from django_celery_beat.models import PeriodicTask;"
            "[t.delete() for t in PeriodicTask.objects.filter(name='test refresh')]"
        )
    platforms = env.shell(
        "from mirror.models import PrewarmItem;"
        "print(sorted({tuple(p) for p in PrewarmItem.objects.filter(reference='pwpopular:1',"
        " job__source='schedule').values_list('platforms', flat=True)}))"
    )
    assert platforms == repr([("linux/arm64",)])
    for digest in blobs_of(popular, "linux/arm64"):
        assert upstreams.hub.count("GET", f"/blobs/{digest}") == 1
    for digest in blobs_of(popular):
        assert upstreams.hub.count("GET", f"/blobs/{digest}") == 0
    # Nobody pulled the new image; it is in the cache, served with every upstream stopped.
    stop_upstreams(upstreams)
    for digest in blobs_of(new):
        env.server.wait_committed(f"/v2/pwmoved/blobs/{digest}")
