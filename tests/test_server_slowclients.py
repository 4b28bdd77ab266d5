"""Issue 7, point 4: slow clients do not hold the server.

300 connections trickle a request head one byte every 5 s (far more than the 2 x 32 threads of
the server under test). /healthz and a normal pull (manifest GET, blob GET) must still answer in
seconds, and every slow connection is ended once MIRROR_REQUEST_HEAD_TIMEOUT has passed since it
opened: the deadline is a total for the whole head, which a per-read timeout (a byte arrives
every 5 s) would never reach.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Upstreams, write_config
from tests.mirror_server import MirrorServer
from tests.support.images import MANIFEST_MEDIA_TYPE
from tests.support.slowclients import SlowClients

HEAD_TIMEOUT = 6.0


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams
) -> Iterator[MirrorServer]:
    data = tmp_path_factory.mktemp("slowclients")
    server = MirrorServer(
        data / "var",
        write_config(data / "mirror.yml", upstreams),
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="32",
        MIRROR_REQUEST_HEAD_TIMEOUT=str(HEAD_TIMEOUT),
    )
    server.setup()
    server.start()
    yield server
    server.stop()


def _timed(method: str, url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.request(method, url, timeout=10, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - started


def test_slow_clients_do_not_hold_the_server(server: MirrorServer, upstreams: Upstreams) -> None:
    layout = upstreams.seed("library/slowpull:1", layer_sizes=[2 * 1024 * 1024])
    digest = layout.layer_digests["linux/amd64"][0]

    with SlowClients(server.port, count=300, interval=5.0, max_seconds=25) as slow:
        assert slow.poll() == 300  # all held open, none answered yet

        health, health_time = _timed("GET", f"{server.url}/healthz")
        manifest, manifest_time = _timed(
            "GET",
            f"{server.url}/v2/slowpull/manifests/1",
            headers={"Accept": MANIFEST_MEDIA_TYPE},
        )
        blob, blob_time = _timed("GET", f"{server.url}/v2/slowpull/blobs/{digest}")
        print(
            f"\nwith 300 slow clients: /healthz {health_time:.3f} s, "
            f"cold manifest {manifest_time:.3f} s, cold 2 MiB blob {blob_time:.3f} s"
        )
        assert health.status_code == 200 and health_time < 2
        assert manifest.status_code == 200 and manifest_time < 5
        assert blob.status_code == 200 and blob_time < 5
        assert hashlib.sha256(blob.content).hexdigest() == digest.split(":")[1]
        assert slow.poll() == 300  # still within their deadline

        deadline = slow.opened_at + HEAD_TIMEOUT + 4
        while slow.poll() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert slow.poll() == 0, "slow connections outlived the request head deadline"
        ends = sorted(at for at, _ in slow.ended.values())
        print(f"slow connections ended {ends[0]:.1f}-{ends[-1]:.1f} s after opening")
        assert ends[0] >= HEAD_TIMEOUT - 1
        assert {answer.split(b"\r\n", 1)[0] for _, answer in slow.ended.values()} == {
            b"HTTP/1.1 408 Request Timeout"
        }


def _answer(sock: socket.socket) -> bytes:
    """One answer with a Content-Length body, read off a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ).split(b":")[1]
    )
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length, "bytes past the answer"
    return head


def test_kept_alive_connections_take_their_next_head_however_it_comes(
    server: MirrorServer,
) -> None:
    """A next request's head at once, in pieces slower than the answering thread waits for it
    (config/worker.py LINGER), or never completed: answered, answered, 408 at the deadline."""
    request = b"GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=HEAD_TIMEOUT + 4) as sock:
        for _ in range(3):
            sock.sendall(request)
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        for split in (5, 20, len(request) - 2):
            sock.sendall(request[:split])
            time.sleep(0.3)
            sock.sendall(request[split:])
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(request[:20])
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
    assert HEAD_TIMEOUT - 1 <= waited <= HEAD_TIMEOUT + 2
