"""The fill path under faults: slow, corrupting, failing and vanishing upstreams, a crash
mid-fill, and many concurrent misses. The faults come from a real proxy between the mirror
and the real upstream registry."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.net import get_together


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
