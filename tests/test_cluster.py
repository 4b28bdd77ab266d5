"""Many replicas, one cache: three instances and a Celery worker on one PostgreSQL database,
one S3 API server (moto) and Redis (tests/support/cluster.py).

A miss is fetched from the upstream once across the instances; an instance killed mid-fill
leaves nothing committed and another takes the fill over; podman and the go command pull
through one instance what another filled, with the upstreams stopped; a minute of 200
connections mixing warm and cold pulls makes no error and no worker's memory grow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.client import OCI_ACCEPT
from bench.multi import run_spread
from bench.rss import rss
from mirror.digests import storage_key
from tests.conftest import Upstreams, write_config
from tests.mirror_server import ROOT, MirrorServer
from tests.support.cluster import Cluster, backing_services
from tests.support.faultproxy import FaultProxy
from tests.support.gocmd import go_env, run_go
from tests.support.gomodules import Module, StaticServer, write_tree
from tests.support.net import get_together
from tests.test_clients import podman, skopeo_copy  # noqa: F401 - podman: a fixture (on `mirror`)

MODULE = Module("example.com/replicated", "v1.0.0", pad=300_000)
MIB = 1024 * 1024


@dataclass
class World:
    cluster: Cluster
    upstreams: Upstreams
    go: FaultProxy  # the Go upstream (a static GOPROXY tree), counted
    tmp: Path

    @property
    def servers(self) -> list[MirrorServer]:
        return self.cluster.servers


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("cluster")
    write_tree(tmp / "gotree", [MODULE])
    with (
        StaticServer(tmp / "gotree") as static,
        FaultProxy(static.url) as go,
        backing_services(tmp) as backing,
    ):
        config = write_config(tmp / "mirror.yml", upstreams)
        with config.open("a") as f:
            f.write(f'  - {{name: gomods, kind: go, url: "{go.url}", verify_sums: false}}\n')
        with Cluster(tmp / "cluster", config, backing) as cluster:
            yield World(cluster, upstreams, go, tmp)


@pytest.fixture
def mirror(world: World) -> MirrorServer:
    """Instance A: the one tests/test_clients.py's podman fixture pulls through."""
    return world.servers[0]


def _layer(world: World, name: str, size: int) -> tuple[str, bytes]:
    layout = world.upstreams.seed(f"library/{name}:1", layer_sizes=[size])
    digest = layout.layer_digests["linux/amd64"][0]
    return digest, layout.blob_bytes(digest)


def test_concurrent_cold_requests_fetch_once(world: World) -> None:
    digest, data = _layer(world, "once", 4 * MIB)
    hub = world.upstreams.hub
    hub.delay_per_chunk = 0.01  # 64 chunks: the requests overlap
    hub.reset()
    path = f"/v2/once/blobs/{digest}"
    bodies = get_together([f"{s.url}{path}" for s in world.servers * 8])
    assert len(bodies) == 24 and all(body == data for body in bodies)
    assert hub.count("GET", f"/blobs/{digest}") == 1
    world.servers[0].wait_committed(path)
    for server in world.servers:
        warm = httpx.get(f"{server.url}{path}", timeout=60)
        assert warm.headers["X-Cache"] == "HIT" and warm.content == data
    assert hub.count("GET", f"/blobs/{digest}") == 1


ONCE = Module("example.com/once", "v1.0.0")


def test_concurrent_cold_small_things_fetch_once(world: World) -> None:
    """A Go `.info` and `.mod` and a manifest by tag, asked of the three instances at once
    while the upstreams are slow: one upstream GET each (the fetch-once locks are PostgreSQL
    lease rows here)."""
    write_tree(world.tmp / "gotree", [ONCE])
    world.upstreams.seed("library/oncesmall:1", layer_sizes=[1000])
    world.go.delay_per_request = world.upstreams.hub.delay_per_request = 0.3
    world.go.reset()
    world.upstreams.hub.reset()
    try:
        files = [f"/{ONCE.path}/@v/{ONCE.version}.{ext}" for ext in ("info", "mod")]
        manifest = "/v2/oncesmall/manifests/1"
        urls = [f"{s.url}{path}" for s in world.servers * 6 for path in [*files, manifest]]
        bodies = get_together(urls)
    finally:
        world.go.delay_per_request = world.upstreams.hub.delay_per_request = 0.0
    for path, expected in zip(files, [ONCE.info_bytes(), ONCE.mod_bytes()], strict=True):
        assert {body for url, body in zip(urls, bodies, strict=True) if url.endswith(path)} == {
            expected
        }
        assert world.go.count("GET", path) == 1
    assert world.upstreams.hub.count("GET", "/oncesmall/manifests/1") == 1


def _get(url: str) -> bytes | Exception:
    """The body, or what went wrong (the killed instance's clients fail)."""
    try:
        response = httpx.get(url, timeout=60)
        response.raise_for_status()
        return response.content
    except httpx.HTTPError as e:
        return e


def test_filler_killed_mid_fill(world: World) -> None:
    """The instance holding the fill's lease is SIGKILLed halfway through a 12 MiB blob (past
    the first 8 MiB part of the S3 multipart upload): the clients of the other instances
    still get the whole body (one of them takes the fill over once the lease expires), and
    only the second fill's verified object is committed."""
    digest, data = _layer(world, "killed", 12 * MIB)
    key = storage_key(digest)
    hub, cluster = world.upstreams.hub, world.cluster
    hub.delay_per_chunk = 0.03  # 192 chunks: about 6 s
    hub.reset()
    path = f"/v2/killed/blobs/{digest}"
    with ThreadPoolExecutor(9) as pool:
        asked = [(s, pool.submit(_get, f"{s.url}{path}")) for s in world.servers * 3]
        filler = cluster.filler_of(key)
        _wait_for(lambda: bool(cluster.rows(PUBLISHED, key)))
        time.sleep(3)  # about half of the body
        filler.kill()
        answers = [(server, future.result()) for server, future in asked]
    survivors = [s for s in world.servers if s is not filler]
    try:
        others = [body for server, body in answers if server is not filler]
        assert len(others) == 6
        assert all(body == data for body in others), [type(b) for b in others]
        assert hub.count("GET", f"/blobs/{digest}") == 2  # the killed fill and the takeover
        survivors[0].wait_committed(path)
        committed = [k for k in cluster.objects() if k.endswith(key)]
        assert len(committed) == 1
        stored = cluster.s3.get_object(Bucket=cluster.bucket, Key=committed[0])["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == digest.split(":")[1]
        assert cluster.rows(STORED, key) == [(len(data),)]
    finally:
        filler.start()
    # What the killed fill began (an S3 multipart upload, a spool) is never completed: the
    # sweep aborts it once it is older than two lease periods.
    _wait_for(lambda: _swept(survivors[0]) and not cluster.uploads(), timeout=30)
    assert [k for k in cluster.objects() if k.endswith(key)] == committed


PUBLISHED = "SELECT 1 FROM mirror_filllease WHERE key = %s AND spool_path <> ''"
STORED = "SELECT size FROM mirror_storedobject WHERE key = %s"


def _swept(server: MirrorServer) -> bool:
    server.manage("sweep_fills")
    return True


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not so after {timeout} s")
        time.sleep(0.2)


def test_podman_and_go_pull_through_a_what_b_filled_upstreams_stopped(
    world: World,
    podman,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    a, b = world.servers[0], world.servers[1]
    world.upstreams.seed("library/replicated:1", layer_sizes=[300_000, 100_000])
    skopeo_copy(b, "replicated:1", tmp_path / "through-b")
    env_b = go_env(tmp_path / "go-b", b.url, None)
    project = tmp_path / "project"
    project.mkdir()
    (project / "go.mod").write_text(
        f"module example.com/p\n\ngo 1.18\n\nrequire {MODULE.path} {MODULE.version}\n"
    )
    run_go(["mod", "download", "-json"], project, env_b)
    world.upstreams.hub.stop()
    world.go.stop()
    try:
        podman("pull", "-q", "docker.io/library/replicated:1")
        env_a = go_env(tmp_path / "go-a", a.url, None)
        out = run_go(["mod", "download", "-json"], project, env_a).stdout
        assert f'"Version": "{MODULE.version}"' in out and '"Error"' not in out
    finally:
        world.go.start()


LOAD_SECONDS = 60
LOAD_CONNECTIONS = 200
# Cold items, asked of the three instances at once at COLD_PER_SECOND: Go modules (most small,
# read in memory; every tenth with a zip over MIRROR_SMALL_OBJECT_BYTES, streamed) and the
# layers of an image never pulled.
LOAD_MODULES = [
    Module(f"example.com/load/m{n:03}", "v1.0.0", pad=300_000 if n % 10 == 0 else 2_000)
    for n in range(250)
]
COLD_PER_SECOND = 10
ARTIFACT = ROOT / "test-artifacts" / "cluster-load.json"
MIB_F = float(MIB)


def test_load_mixing_warm_and_cold_pulls(world: World) -> None:
    """200 connections for 60 s over the three instances, warm pulls (a manifest by tag, two
    blobs, a Go module's files) mixed with cold ones: no error, and the resident memory of
    every gunicorn worker flat over the last 40 s (reported in test-artifacts/)."""
    up = world.upstreams
    write_tree(world.tmp / "gotree", [*LOAD_MODULES, MODULE])
    hot = up.seed("library/warmload:1", layer_sizes=[MIB, 200_000])
    fresh = up.seed("library/coldload:1", layer_sizes=[100_000] * 20 + [600_000] * 5)
    go_files = [f"/{MODULE.path}/@v/{MODULE.version}.{ext}" for ext in ("info", "mod", "zip")]
    hot_blobs = [f"/v2/warmload/blobs/{d}" for d in hot.layer_digests["linux/amd64"]]
    warm = ["/v2/warmload/manifests/1", *hot_blobs, *go_files]
    for server in world.servers:
        for path in warm:
            answer = httpx.get(f"{server.url}{path}", headers=OCI_ACCEPT, timeout=60)
            assert answer.status_code == 200, (path, answer.text[:200])
    for path in hot_blobs:
        world.servers[0].wait_committed(path)
    cold_blobs = [f"/v2/coldload/blobs/{d}" for d in fresh.layer_digests["linux/amd64"]]
    cold = []
    for n, module in enumerate(LOAD_MODULES):
        cold += [f"/{module.path}/@v/{module.version}.{ext}" for ext in ("mod", "zip")]
        if n % 10 == 5 and cold_blobs:
            cold.append(cold_blobs.pop())
    cold += cold_blobs
    up.hub.reset()
    world.go.reset()

    samples: list[tuple[float, dict[str, int]]] = []
    with _Sampler(world.cluster, samples):
        result = run_spread(
            [s.port for s in world.servers],
            warm,
            cold=cold,
            cold_per_second=COLD_PER_SECOND,
            connections=LOAD_CONNECTIONS,
            duration=LOAD_SECONDS,
            headers=OCI_ACCEPT,
        )
    memory = _memory_report(samples)
    under_load = {path: _upstream_gets(world, path) for path in cold}
    # wrk asks the cold paths between warm requests: when the S3 server (moto, one Python
    # process on these two CPUs) is slow, the minute ends before all were asked. Those are
    # asked now, and must be answered like the others.
    late = [path for path, n in under_load.items() if n == 0]
    for n, path in enumerate(late):
        server = world.servers[n % len(world.servers)]
        answer = httpx.get(f"{server.url}{path}", headers=OCI_ACCEPT, timeout=60)
        assert answer.status_code == 200, (path, answer.text[:200])
    fetched = {path: _upstream_gets(world, path) for path in cold}
    gets = sum(fetched.values())
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(
        json.dumps(
            {
                "wrk": {**dataclasses.asdict(result), "rps": result.rps},
                "cold_paths": len(cold),
                "cold_paths_asked_after_the_load": len(late),
                "cold_upstream_gets": gets,
                "rss_mib": memory,
            },
            indent=2,
        )
    )
    print(f"\nload: {result.describe()}; {result.rps:.0f} requests/s")
    print(f"cold: {len(cold)} paths ({len(late)} asked after the load), {gets} upstream GETs")
    for worker, figures in memory.items():
        print(f"RSS {worker}: " + ", ".join(f"{k} {v:.1f} MiB" for k, v in figures.items()))
    assert result.error_count == 0, result.describe()
    assert all(n >= 1 for n in fetched.values())  # every cold path was asked for, and answered
    for worker, figures in memory.items():
        growth = figures["last"] - figures["at_20s"]
        assert growth < 40 and growth < 0.25 * figures["at_20s"], (worker, figures)


def _upstream_gets(world: World, path: str) -> int:
    if path.startswith("/v2/"):
        return world.upstreams.hub.count("GET", path.rsplit("/", 1)[1])
    return world.go.count("GET", path)


class _Sampler:
    """Samples the RSS of every gunicorn worker of the cluster every 2 s, in a thread."""

    def __init__(self, cluster: Cluster, samples: list[tuple[float, dict[str, int]]]) -> None:
        self.cluster, self.samples = cluster, samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            pids = self.cluster.worker_pids()
            found = {label: rss(pid) for pid, label in pids.items()}
            self.samples.append(
                (time.monotonic() - started, {k: v for k, v in found.items() if v is not None})
            )
            if self._stop.wait(2):
                return

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _memory_report(samples: list[tuple[float, dict[str, int]]]) -> dict[str, dict[str, float]]:
    """Per worker, in MiB: the first and last samples, the peak, and the sample at 20 s (the
    start of the last 40 s of the load)."""
    report = {}
    for worker in samples[0][1]:
        series = [(t, found[worker]) for t, found in samples if worker in found]
        at_20s = next((value for t, value in series if t >= 20), series[-1][1])
        report[worker] = {
            "first": series[0][1] / MIB_F,
            "at_20s": at_20s / MIB_F,
            "last": series[-1][1] / MIB_F,
            "peak": max(value for _, value in series) / MIB_F,
        }
    return report
