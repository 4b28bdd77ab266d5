"""The fill path under faults: slow, corrupting, failing and vanishing upstreams, a crash
mid-fill, and many concurrent misses. The faults come from a real proxy between the mirror
and the real upstream registry, or from a small misbehaving upstream (endless and trickling
bodies, tests/support/fill_servers.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.fill_servers import TRICKLE, BodyServer
from tests.support.gomodules import Module, StaticServer, write_tree
from tests.support.net import get_together

HUGE = "9" * 5000  # more digits than Python's int() accepts


def _stored(mirror: MirrorServer, digest: str) -> bool:
    hexpart = digest.split(":", 1)[1]
    return (mirror.data_dir / "storage/objects/blobs/sha256" / hexpart[:2] / hexpart).exists()


def _eventually(check, seconds: float = 10) -> bool:
    """The client has every byte once they are verified; the commit (fsync, rename) follows."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _tmp_files(mirror: MirrorServer) -> list[str]:
    return [p.name for p in (mirror.data_dir / "storage/tmp").iterdir()]


def _layer(upstreams: Upstreams, name: str, size: int) -> tuple[str, bytes]:
    layout = upstreams.seed(f"library/{name}:1", layer_sizes=[size])
    digest = layout.layer_digests["linux/amd64"][0]
    return digest, layout.blob_bytes(digest)


def test_cold_blob_streams_through(mirror: MirrorServer, upstreams: Upstreams) -> None:
    digest, data = _layer(upstreams, "slowblob", 2 * 1024 * 1024)
    upstreams.hub.delay_per_chunk = 0.1  # 64 KiB chunks: about 3 s for the whole blob
    started = time.monotonic()
    with httpx.stream("GET", f"{mirror.url}/v2/slowblob/blobs/{digest}", timeout=60) as r:
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        chunks = r.iter_raw()
        first = next(chunks)
        first_byte = time.monotonic() - started
        body = first + b"".join(chunks)
    total = time.monotonic() - started
    assert body == data
    assert total > 2.5  # the upstream really was slow
    assert first_byte < total / 4, (first_byte, total)


def test_concurrent_cold_requests_fetch_once(mirror: MirrorServer, upstreams: Upstreams) -> None:
    digest, data = _layer(upstreams, "coalesce", 3 * 1024 * 1024)
    upstreams.hub.delay_per_chunk = 0.01
    upstreams.hub.reset()
    bodies = get_together([f"{mirror.url}/v2/coalesce/blobs/{digest}"] * 16)
    assert all(body == data for body in bodies)
    assert upstreams.hub.count("GET", f"/blobs/{digest}") == 1


def test_corrupt_upstream_caches_nothing(mirror: MirrorServer, upstreams: Upstreams) -> None:
    digest, data = _layer(upstreams, "corrupt", 500_000)
    upstreams.hub.corrupt = True
    url = f"{mirror.url}/v2/corrupt/blobs/{digest}"
    # Refused: a 502 when verification fails before the first byte leaves, else the body is
    # cut short; never a clean end of a wrong body.
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=30).raise_for_status()
    time.sleep(0.5)
    assert not _stored(mirror, digest)
    upstreams.hub.corrupt = False
    good = httpx.get(url, timeout=30)
    assert good.status_code == 200 and good.content == data
    assert good.headers["X-Cache"] == "MISS"
    assert _eventually(lambda: _stored(mirror, digest))


def test_small_corrupt_blob_is_a_clean_oci_error(
    mirror: MirrorServer, upstreams: Upstreams
) -> None:
    """Below the held-back tail, nothing leaves before verification: a proper error answer."""
    digest, _ = _layer(upstreams, "smallcorrupt", 10_000)
    upstreams.hub.corrupt = True
    response = httpx.get(f"{mirror.url}/v2/smallcorrupt/blobs/{digest}", timeout=30)
    assert response.status_code == 502
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert not _stored(mirror, digest)


def test_truncated_upstream_body_caches_nothing(mirror: MirrorServer, upstreams: Upstreams) -> None:
    digest, data = _layer(upstreams, "truncated", 500_000)
    upstreams.hub.cut_after = 100_000
    url = f"{mirror.url}/v2/truncated/blobs/{digest}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=30).raise_for_status()
    assert not _stored(mirror, digest)
    upstreams.hub.cut_after = None
    assert httpx.get(url, timeout=30).content == data


def test_stale_tag_when_upstream_down(mirror: MirrorServer, upstreams: Upstreams) -> None:
    upstreams.seed("library/staletag:1")
    fresh = httpx.get(f"{mirror.url}/v2/staletag/manifests/1", timeout=30)
    assert fresh.status_code == 200
    time.sleep(1.1)  # past the hub's tag_ttl of 1 s
    upstreams.hub.stop()
    stale = httpx.get(f"{mirror.url}/v2/staletag/manifests/1", timeout=30)
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "STALE"
    assert stale.content == fresh.content
    started = time.monotonic()
    missing = httpx.get(f"{mirror.url}/v2/neverpulled/manifests/1", timeout=30)
    assert time.monotonic() - started < 10
    assert missing.status_code == 503
    assert missing.json()["errors"][0]["code"] == "UNAVAILABLE"


@pytest.mark.parametrize("status", [503, 429])
def test_stale_tag_on_5xx_and_429(mirror: MirrorServer, upstreams: Upstreams, status: int) -> None:
    upstreams.seed(f"library/stale{status}:1")
    assert httpx.get(f"{mirror.url}/v2/stale{status}/manifests/1").status_code == 200
    time.sleep(1.1)
    upstreams.hub.status = status
    upstreams.hub.retry_after = 1 if status == 429 else None
    stale = httpx.get(f"{mirror.url}/v2/stale{status}/manifests/1", timeout=30)
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "STALE"
    missing = httpx.get(f"{mirror.url}/v2/neverpulled{status}/manifests/1", timeout=30)
    assert missing.status_code == status
    if status == 429:
        time.sleep(1.1)  # the mirror honours Retry-After: let it pass before the next test


def test_hung_upstream_fails_fast(mirror: MirrorServer, upstreams: Upstreams) -> None:
    upstreams.hub.hang = True
    started = time.monotonic()
    response = httpx.get(f"{mirror.url}/v2/hungrepo/manifests/1", timeout=30)
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_crash_mid_fill_commits_nothing(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams
) -> None:
    from tests.conftest import write_config

    data_dir = tmp_path_factory.mktemp("crash")
    server = MirrorServer(data_dir / "var", write_config(data_dir / "mirror.yml", upstreams))
    server.setup()
    server.start()
    try:
        digest, _ = _layer(upstreams, "crash", 2 * 1024 * 1024)
        upstreams.hub.delay_per_chunk = 0.05
        url = f"{server.url}/v2/crash/blobs/{digest}"
        with httpx.stream("GET", url, timeout=60) as r:
            next(r.iter_raw())  # the fill is under way
            server.kill()
        assert _tmp_files(server)  # the partial object exists only as a temporary
        assert not _stored(server, digest)
        upstreams.hub.delay_per_chunk = 0.0
        time.sleep(4.5)  # the dead filler's lease expires
        server.start()
        response = httpx.get(url, timeout=60)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == digest.split(":")[1]
        assert _eventually(lambda: _stored(server, digest))
        time.sleep(4)  # older than two leases: abandoned for sure
        server.manage("sweep_fills")
        assert _tmp_files(server) == []
    finally:
        server.stop()


def test_range_of_thousands_of_digits(mirror: MirrorServer, upstreams: Upstreams) -> None:
    digest, data = _layer(upstreams, "hugerange", 200_000)
    url = f"{mirror.url}/v2/hugerange/blobs/{digest}"
    for _ in ("cold", "warm"):
        past = httpx.get(url, headers={"Range": f"bytes={HUGE}-"}, timeout=30)
        assert past.status_code == 416
        assert past.json()["errors"][0]["code"] == "RANGE_INVALID"
        whole = httpx.get(url, headers={"Range": f"bytes=0-{HUGE}"}, timeout=30)
        assert whole.status_code == 206 and whole.content == data
        mirror.wait_committed(f"/v2/hugerange/blobs/{digest}")


@dataclass
class Limited:
    """A mirror with a 2 MiB blob limit and a 1 s abandon budget, in front of the
    misbehaving upstream and a static Go module proxy."""

    mirror: MirrorServer
    bodies: BodyServer
    module: Module

    def objects(self) -> list[Path]:
        return [p for p in (self.mirror.data_dir / "storage/objects").rglob("*") if p.is_file()]

    def temporaries(self) -> list[Path]:
        return list((self.mirror.data_dir / "storage/tmp").iterdir())


LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    tmp = tmp_path_factory.mktemp("limited")
    module = Module("example.com/ranged", "v1.0.0", pad=100_000)
    write_tree(tmp / "go", [module])
    with BodyServer() as bodies:
        go = StaticServer(tmp / "go").start()
        config = tmp / "mirror.yml"
        config.write_text(
            f"""
upstreams:
  - {{name: odd, kind: oci, url: "{bodies.url}", prefix: docker.io, default: true}}
  - {{name: go, kind: go, url: "{go.url}", verify_sums: false}}
"""
        )
        mirror = MirrorServer(
            tmp / "var",
            config,
            MIRROR_MAX_BLOB_BYTES=str(LIMIT),
            MIRROR_FILL_ABANDON_SECONDS="1",
            MIRROR_GO_VERIFY="off",
        )
        mirror.setup()
        mirror.start()
        try:
            yield Limited(mirror, bodies, module)
        finally:
            mirror.stop()
            go.stop()


def test_endless_body_stops_at_the_limit(limited: Limited) -> None:
    url = f"{limited.mirror.url}/v2/endless/blobs/sha256:{'e' * 64}"
    received = 0
    with pytest.raises(httpx.HTTPError), httpx.stream("GET", url, timeout=30) as response:
        response.raise_for_status()  # a 502, or a body cut short: never a clean end
        for chunk in response.iter_raw():
            received += len(chunk)
            assert received <= LIMIT, "the mirror passed on more than the limit"
    body = limited.bodies.bodies[-1]
    assert body.ended.wait(10), "the mirror kept reading an endless body"
    # What was sent: the limit, plus what the sockets' buffers held when the mirror stopped.
    assert body.sent < LIMIT + 8 * 1024 * 1024, body.sent
    assert limited.objects() == []
    assert _eventually(lambda: limited.temporaries() == [])


def test_fill_abandoned_by_its_client_stops(limited: Limited) -> None:
    url = f"{limited.mirror.url}/v2/trickle/blobs/sha256:{'f' * 64}"
    with httpx.stream("GET", url, timeout=30) as response:
        assert response.status_code == 200 and response.headers["X-Cache"] == "MISS"
        next(response.iter_raw())
    left = time.monotonic()  # the client is gone; the upstream would trickle for 20 s more
    body = limited.bodies.bodies[-1]
    assert body.ended.wait(15), "the fill went on with no client"
    assert time.monotonic() - left >= 0.9  # not before the budget (1 s) was spent
    assert body.sent < TRICKLE
    assert limited.objects() == []
    assert _eventually(lambda: limited.temporaries() == [])


def test_go_zip_range_of_thousands_of_digits(limited: Limited) -> None:
    url = f"{limited.mirror.url}{limited.module.url_path('zip')}"
    data = limited.module.zip_bytes()
    for _ in ("cold", "warm"):
        past = httpx.get(url, headers={"Range": f"bytes={HUGE}-"}, timeout=30)
        assert past.status_code == 416
        whole = httpx.get(url, headers={"Range": f"bytes=-{HUGE}"}, timeout=30)
        assert whole.status_code == 206 and whole.content == data
        assert _eventually(lambda: any(p.suffix == ".zip" for p in limited.objects()))
