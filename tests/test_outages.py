"""Faults at scale: PostgreSQL away for 10 s, then S3 away for 10 s, while clients pull warm
and cold content through three instances (tests/support/cluster.py).

Each service is reached through a TCP relay (tests/support/tcprelay.py) that the test pauses
in "refuse" mode: open connections are reset and new ones refused, as when the service is
stopped. Pausing the relay is the honest stand-in for stopping the service: moto keeps its
bucket in memory (stopping it would lose the cache, which no real S3 outage does), and
PostgreSQL on this machine is shared with other test runs.

During an outage every answer is either correct (a manifest or Go .info kept in the database,
while S3 is away) or a clear 503 in the protocol's own format (OCI `UNAVAILABLE` JSON, Go plain
text) with Retry-After; none is a 500 or another error, none takes 15 s or more. A body
streaming when the outage starts may be cut, never ended cleanly with wrong bytes. After the
outage every item is served correctly by every instance without a restart, and nothing is
half-committed: each stored object has its index row with its size and its digest, no
index row lacks its object, no fill's lease row is left, and the incomplete S3 uploads a
failed fill leaves behind are swept.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from goproxy.keys import file_key
from mirror.digests import storage_key
from tests.conftest import Upstreams, write_config
from tests.mirror_server import MirrorServer
from tests.support.cluster import Backing, Cluster, MotoServer, fresh_database
from tests.support.gomodules import Module, StaticServer, write_tree
from tests.support.tcprelay import TcpRelay
from tests.support.worker import redis_url

OUTAGE = 10.0  # seconds each service is away
SLOWEST = 15.0  # no answer may take this long, during an outage or after
RECOVERY = 30.0  # every item served correctly by every instance within this after it
MIB = 1024 * 1024
PREFIX = "entrepot/objects/"  # MIRROR_S3_PREFIX's default, and the storage's objects folder
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
MODULES = {
    name: Module(f"example.com/outage/{name}", "v1.0.0", pad=300_000)
    for name in ("dbwarm", "dbcold", "s3warm", "s3cold")
}
ZIPS = {file_key("", m.path, m.version, "zip"): m.zip_bytes() for m in MODULES.values()}


@dataclass
class World:
    cluster: Cluster
    upstreams: Upstreams
    database: TcpRelay
    s3: TcpRelay

    @property
    def servers(self) -> list[MirrorServer]:
        return self.cluster.servers


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("outages")
    write_tree(tmp / "gotree", list(MODULES.values()))
    with (
        StaticServer(tmp / "gotree") as go,
        fresh_database() as database_url,
        MotoServer(tmp / "moto.log") as moto,
        TcpRelay("127.0.0.1", 5432) as database,
        TcpRelay("127.0.0.1", moto.port) as s3,
    ):
        config = write_config(tmp / "mirror.yml", upstreams)
        with config.open("a") as f:
            f.write(f'  - {{name: gomods, kind: go, url: "{go.url}"}}\n')
        name = database_url.rsplit("/", 1)[1]
        backing = Backing(
            f"postgresql://postgres@127.0.0.1:{database.port}/{name}",
            f"http://127.0.0.1:{s3.port}",
            redis_url(),
        )
        with Cluster(tmp / "cluster", config, backing, MIRROR_GO_VERIFY="off") as cluster:
            yield World(cluster, upstreams, database, s3)


# -- what the clients ask, and what counts as a right answer --------------------------------
@dataclass(frozen=True)
class Item:
    path: str
    body: bytes
    go: bool = False


@dataclass
class Answer:
    item: Item
    server: str
    started: float
    seconds: float
    status: int | None  # None: the connection was cut mid-body
    problem: str = ""  # why the answer is wrong; empty when it is right
    said: str = ""  # the start of an error answer's body


def _oci_items(world: World, name: str, layers: int) -> list[Item]:
    """The manifest (by tag and by digest) and blobs of a freshly pushed image."""
    layout = world.upstreams.seed(f"library/{name}:1", layer_sizes=[300_000] * layers)
    manifest = layout.blob_bytes(layout.digest)
    blobs = [*layout.layer_digests["linux/amd64"], *layout.config_digests.values()]
    return [
        Item(f"/v2/{name}/manifests/1", manifest),
        Item(f"/v2/{name}/manifests/{layout.digest}", manifest),
        *(Item(f"/v2/{name}/blobs/{d}", layout.blob_bytes(d)) for d in blobs),
    ]


def _go_items(module: Module) -> list[Item]:
    return [
        Item(module.url_path("info"), module.info_bytes(), go=True),
        Item(module.url_path("mod"), module.mod_bytes(), go=True),
        Item(module.url_path("zip"), module.zip_bytes(), go=True),
    ]


def _judge(item: Item, response: httpx.Response) -> str:
    """Why this answer is wrong ("" if it is right): the right bytes, or a clear 503."""
    if response.status_code == 200:
        return "" if response.content == item.body else "200 with wrong bytes"
    if response.status_code != 503:
        return f"status {response.status_code}: {response.text[:200]!r}"
    if not response.headers.get("Retry-After", "").isdigit():
        return "503 without Retry-After"
    if item.go:
        plain = response.headers.get("Content-Type", "").startswith("text/plain")
        return "" if plain and response.text.strip() else "Go 503 not in plain text"
    try:
        codes = [e["code"] for e in response.json()["errors"]]
    except (ValueError, KeyError, TypeError):
        return f"OCI 503 not an OCI error: {response.text[:200]!r}"
    return "" if codes == ["UNAVAILABLE"] else f"OCI 503 with codes {codes}"


def _ask(server: MirrorServer, item: Item) -> Answer:
    started = time.monotonic()
    headers = {"Accept": ACCEPT}
    try:
        response = httpx.get(f"{server.url}{item.path}", headers=headers, timeout=SLOWEST + 10)
    except (httpx.RemoteProtocolError, httpx.ReadError) as e:
        seconds = time.monotonic() - started
        return Answer(item, server.url, started, seconds, None, f"cut: {e!r}")
    seconds = time.monotonic() - started
    problem, status = _judge(item, response), response.status_code
    said = response.text[:160] if status != 200 else ""
    return Answer(item, server.url, started, seconds, status, problem, said)


class Clients:
    """`count` clients pulling `items` from every instance in turn, until stopped."""

    def __init__(self, servers: list[MirrorServer], items: list[Item], count: int = 6) -> None:
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        pairs = [(s, i) for i in items for s in servers]
        self._threads = [
            threading.Thread(target=self._pull, args=(pairs[n:] + pairs[:n],), daemon=True)
            for n in range(0, len(pairs), max(1, len(pairs) // count))
        ]

    def _pull(self, pairs: list[tuple[MirrorServer, Item]]) -> None:
        while not self._stop.is_set():
            for server, item in pairs:
                if self._stop.is_set():
                    return
                self.answers.append(_ask(server, item))
                time.sleep(0.02)

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(SLOWEST + 15)


def _stream(server: MirrorServer, item: Item, started: threading.Event) -> Callable[[], Answer]:
    """GET a large cold blob in a thread; `started` is set once its first MiB arrived.
    Returns a function that waits for the answer."""
    result: list[Answer] = []

    def pull() -> None:
        begun = time.monotonic()
        body = bytearray()
        try:
            with httpx.stream("GET", f"{server.url}{item.path}", timeout=60) as response:
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= MIB:
                        started.set()
                status = response.status_code
        except (httpx.RemoteProtocolError, httpx.ReadError) as e:
            result.append(Answer(item, server.url, begun, 0, None, f"cut: {e!r}"))
            return
        finally:
            started.set()
        problem = "" if status == 200 and body == item.body else f"{status}, wrong bytes"
        result.append(Answer(item, server.url, begun, time.monotonic() - begun, status, problem))

    thread = threading.Thread(target=pull, daemon=True)
    thread.start()

    def wait() -> Answer:
        thread.join(60)
        assert result, "the streaming client did not finish within 60 s"
        return result[0]

    return wait


@contextmanager
def _outage(relay: TcpRelay) -> Iterator[float]:
    """The service behind `relay` away for OUTAGE seconds; yields when it went away."""
    relay.pause("refuse")
    try:
        yield time.monotonic()
        time.sleep(max(0.0, OUTAGE - 0.5))
    finally:
        relay.resume()


def _recover(world: World, items: list[Item]) -> float:
    """Seconds until every instance answers every item correctly (cold items get filled),
    then a burst of concurrent requests over every instance: all correct (many of each
    server's threads, whose database connections the outage broke, answer in it)."""
    resumed = time.monotonic()
    pairs = [(s, i) for i in items for s in world.servers]
    while True:
        with ThreadPoolExecutor(8) as pool:
            wrong = [a for a in pool.map(lambda p: _ask(*p), pairs) if a.problem]
        if not wrong:
            break
        assert time.monotonic() - resumed < RECOVERY, _describe(wrong)
        time.sleep(0.5)
    recovered = time.monotonic() - resumed
    with ThreadPoolExecutor(24) as pool:
        burst = list(pool.map(lambda p: _ask(*p), pairs * 4))
    assert not [a for a in burst if a.problem], _describe([a for a in burst if a.problem])
    assert max(a.seconds for a in burst) < SLOWEST
    return recovered


def _describe(answers: list[Answer]) -> str:
    return "\n".join(
        f"{a.server}{a.item.path[:90]}: {a.status} {a.problem} ({a.seconds:.1f} s) {a.said!r}"
        for a in answers[:20]
    )


def _check_answers(answers: list[Answer], cut_at: float, *, during: tuple[float, float]) -> None:
    """Right or a clear 503, within SLOWEST; cut only if begun before the cut."""
    assert answers, "no client answer was recorded"
    wrong = [
        a
        for a in answers
        if a.problem and not (a.status is None and a.started < cut_at)  # cut mid-flight
    ]
    assert not wrong, _describe(wrong)
    slow = [a for a in answers if a.seconds >= SLOWEST]
    assert not slow, _describe(slow)
    in_outage = [a for a in answers if during[0] <= a.started < during[1]]
    assert any(a.status == 503 for a in in_outage), "no 503 during the outage"


def _nothing_half_committed(world: World, *, aborts_failed: bool) -> None:
    """S3 objects and their index rows agree (key, size, digest); no fill's lease row is
    left; no incomplete upload is left, but those of fills whose abort failed with S3 away
    (`aborts_failed`), which the sweep removes."""
    cluster = world.cluster
    objects = {k.removeprefix(PREFIX): k for k in cluster.objects() if k.startswith(PREFIX)}
    rows = dict(cluster.rows("SELECT key, size FROM mirror_storedobject"))
    assert set(rows) == set(objects), (sorted(set(rows) ^ set(objects)), "index != storage")
    for key, full_key in objects.items():
        body = cluster.s3.get_object(Bucket=cluster.bucket, Key=full_key)["Body"].read()
        assert len(body) == rows[key], key
        if key.startswith("blobs/"):
            assert storage_key(f"sha256:{hashlib.sha256(body).hexdigest()}") == key
        else:
            assert body == ZIPS[key], key

    def leases() -> list[tuple[str, bool]]:
        query = "SELECT key, expires_at >= now() FROM mirror_filllease"
        return [(key, live) for key, live in cluster.rows(query)]

    deadline = time.monotonic() + 15
    while [k for k, live in leases() if live or not k.startswith("once:")]:
        assert time.monotonic() < deadline, f"leases left: {leases()}"
        time.sleep(0.5)
    if aborts_failed:
        # Any was begun before the outage, so over 8 s old: the sweep takes it (MirrorServer's
        # lease period is 4 s, and uploads older than two periods are abandoned).
        world.servers[0].manage("sweep_fills")
    assert cluster.uploads() == []
    assert cluster.rows("SELECT count(*) FROM mirror_filllease") == [(0,)]


def _run_outage(world: World, relay: TcpRelay, tag: str) -> tuple[list[Answer], float]:
    """Warm some content, then pull it and cold content while `relay`'s service is away,
    with a large cold blob streaming when it goes; checks every answer and the recovery."""
    warm = [*_oci_items(world, f"{tag}warm", 2), *_go_items(MODULES[f"{tag}warm"])]
    cold = [*_oci_items(world, f"{tag}cold", 2), *_go_items(MODULES[f"{tag}cold"])]
    for server in world.servers:
        for item in warm:
            assert not _ask(server, item).problem, item.path
    layout = world.upstreams.seed(f"library/{tag}big:1", layer_sizes=[12 * MIB])
    digest = layout.layer_digests["linux/amd64"][0]
    big = Item(f"/v2/{tag}big/blobs/{digest}", layout.blob_bytes(digest))
    world.upstreams.hub.delay_per_chunk = 0.02  # the big blob streams for about 4 s
    streaming = threading.Event()
    big_answer = _stream(world.servers[0], big, streaming)
    assert streaming.wait(30)
    with Clients(world.servers, warm + cold) as clients:
        with _outage(relay) as cut_at:
            pass
        resumed = time.monotonic()
        time.sleep(1)
    world.upstreams.hub.delay_per_chunk = 0
    answers = [big_answer(), *clients.answers]
    _check_answers(answers, cut_at, during=(cut_at + 0.5, resumed - 0.5))
    recovered = _recover(world, warm + cold + [big])
    return answers, recovered


def _report(
    capsys: pytest.CaptureFixture[str], what: str, answers: list[Answer], recovered: float
) -> None:
    """What the outage looked like to the clients, printed for the record."""
    statuses: dict[str, int] = {}
    for a in answers:
        name = "cut" if a.status is None else str(a.status)
        statuses[name] = statuses.get(name, 0) + 1
    slowest = max(a.seconds for a in answers)
    with capsys.disabled():
        print(
            f"\n{what}: answers {statuses}, slowest {slowest:.1f} s, "
            f"full service {recovered:.1f} s after it"
        )


def test_database_outage(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    answers, recovered = _run_outage(world, world.database, "db")
    _report(capsys, "PostgreSQL away 10 s", answers, recovered)
    assert world.cluster.worker is not None and world.cluster.worker.proc is not None
    assert world.cluster.worker.proc.poll() is None, "the Celery worker died"
    _nothing_half_committed(world, aborts_failed=False)
    for server in world.servers:  # the flusher warned once, not once per flush
        log = server.log.read_text()
        assert log.count("database unavailable: counts and writes kept") <= 2  # 2 workers
        assert "Traceback" not in log


def test_storage_outage(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    answers, recovered = _run_outage(world, world.s3, "s3")
    _report(capsys, "S3 away 10 s", answers, recovered)
    # What the database keeps is served all along: manifests (cold ones are fetched and
    # kept), warm Go .info/.mod. (A cold .info/.mod is 503: an earlier release's copy may
    # be in storage, and is looked for first.)
    kept = [
        a
        for a in answers
        if "/manifests/" in a.item.path
        or "s3warm/@v/v1.0.0.info" in a.item.path
        or "s3warm/@v/v1.0.0.mod" in a.item.path
    ]
    assert kept and all(a.status == 200 for a in kept), _describe(
        [a for a in kept if a.status != 200]
    )
    _nothing_half_committed(world, aborts_failed=True)
