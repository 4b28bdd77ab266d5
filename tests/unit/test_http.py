"""The upstream HTTP client against a small misbehaving upstream: caps after decompression,
total deadlines, hostile token answers, redirect loops, bad Retry-After."""

from __future__ import annotations

import dataclasses
import gzip
import json
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mirror.content import Source
from mirror.errors import UpstreamDenied, UpstreamInvalid, UpstreamNotFound, UpstreamUnavailable
from mirror.http import UpstreamClient, parse_retry_after, stream_source, tls_context
from mirror.models import Upstream
from mirror.upstreams import UpstreamInfo

Route = Callable[[BaseHTTPRequestHandler], None]


def _reply(
    status: int = 200, body: bytes = b"", **headers: str
) -> Callable[[BaseHTTPRequestHandler], None]:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name.replace("_", "-"), value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return handle


def _trickle(h: BaseHTTPRequestHandler) -> None:
    """A valid answer, one byte every 0.4 s: each read is quick, the whole is not."""
    body = b'{"tags": []}' * 4
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    for byte in body:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        time.sleep(0.4)


def _overlong(h: BaseHTTPRequestHandler) -> None:
    """Five bytes announced, and more sent in the same write: a lying upstream."""
    h.send_response(200)
    h.send_header("Content-Length", "5")
    h.end_headers()
    h.wfile.write(b"helloHTTP/1.1 200 OK junk past the end\r\n\r\n")


def _bomb() -> bytes:
    """About 100 KiB of gzip that inflates to 100 MiB (made 1 MiB at a time)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(100)) + packer.flush()


def _bearer(h: BaseHTTPRequestHandler) -> None:
    if h.headers.get("Authorization") == "Bearer good":
        _reply(200, b"ok")(h)
        return
    realm = f"http://127.0.0.1:{h.server.server_port}/token"
    _reply(401, WWW_Authenticate=f'Bearer realm="{realm}",service="x"')(h)


ROUTES: dict[str, Route] = {
    "/small": _reply(200, b"hello"),
    "/big": _reply(200, b"x" * 5000),
    "/gzip": _reply(200, gzip.compress(b"hello gzip"), Content_Encoding="gzip"),
    "/deflate": _reply(200, zlib.compress(b"hello deflate"), Content_Encoding="deflate"),
    "/bomb": _reply(200, _bomb(), Content_Encoding="gzip"),
    "/broken-gzip": _reply(200, b"\x1f\x8b\x08\x00garbage", Content_Encoding="gzip"),
    "/brotli": _reply(200, b"???", Content_Encoding="br"),
    "/trickle": _trickle,
    "/overlong": _overlong,
    "/loop": _reply(302, Location="/loop"),
    "/missing": _reply(404, b"x" * 100_000),
    "/limited": _reply(429, Retry_After="Wed, 21 Oct 2015 07:28:00 GMT"),
    "/limited-garbage": _reply(429, Retry_After="soon" * 1000),
    "/huge-error": _reply(500, b"e" * (1 << 20)),
    "/protected": _bearer,
}
TOKENS: dict[str, bytes] = {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/token":
            _reply(200, self.server.token_answer)(self)  # type: ignore[attr-defined]
            return
        ROUTES[path](self)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that give up mid-answer are what these tests do: nothing to report."""


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.token_answer = b""  # type: ignore[attr-defined]
    server.connections = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture
def client(upstream: ThreadingHTTPServer, settings) -> UpstreamClient:
    settings.MIRROR_UPSTREAM_METADATA_TIMEOUT = 1.5
    settings.MIRROR_MAX_METADATA_BYTES = 1024
    info = UpstreamInfo(
        id=1,
        name="bad",
        kind="oci",
        url=f"http://127.0.0.1:{upstream.server_port}",
        prefix="",
        is_default=False,
        tag_ttl=60,
        stale_max_age=60,
        username="",
        password="",
        username_env="",
        password_env="",
        updated=0.0,
    )
    return UpstreamClient(info)


def test_small_answers_are_read_and_decoded(client: UpstreamClient) -> None:
    assert client.fetch("GET", "/small").content == b"hello"
    assert client.fetch("GET", "/gzip").content == b"hello gzip"
    assert client.fetch("GET", "/deflate").content == b"hello deflate"


def test_answer_over_the_cap_is_refused(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamInvalid, match="larger than 1024"):
        client.fetch("GET", "/big")
    assert client.fetch("GET", "/big", cap=5000).content == b"x" * 5000


def test_gzip_bomb_is_refused_at_the_cap_without_inflating_it(client: UpstreamClient) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UpstreamInvalid, match="larger than"):
        client.fetch("GET", "/bomb", cap=1 << 20)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024  # the 100 MiB it inflates to never exists in memory


def test_broken_or_unknown_compression_is_invalid(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamInvalid, match="compress"):
        client.fetch("GET", "/broken-gzip")
    with pytest.raises(UpstreamInvalid, match="Content-Encoding"):
        client.fetch("GET", "/brotli")


def test_trickling_answer_ends_at_the_total_deadline(client: UpstreamClient) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        client.fetch("GET", "/trickle")
    assert time.monotonic() - started < 2.5  # deadline 1.5 s; the answer takes ~19 s


def test_redirect_loop_is_invalid(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamInvalid, match="TooManyRedirects"):
        client.fetch("GET", "/loop")


def test_error_bodies_are_not_read(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamNotFound):
        client.fetch("GET", "/missing")
    with pytest.raises(UpstreamUnavailable, match="500"):
        client.fetch("GET", "/huge-error")


@pytest.mark.django_db  # a 429 is recorded in the upstream budget table (mirror/budgets.py)
def test_retry_after_dates_and_garbage(client: UpstreamClient) -> None:
    Upstream.objects.create(id=client.info.id, name="limited", kind="oci", url=client.info.url)
    with pytest.raises(UpstreamUnavailable) as past:
        client.fetch("GET", "/limited")
    assert not past.value.retry_after  # a date in the past: no wait
    with pytest.raises(UpstreamUnavailable) as garbage:
        client.fetch("GET", "/limited-garbage")
    assert garbage.value.retry_after is None
    assert parse_retry_after("120") == 120
    assert parse_retry_after("99999999999999999999") == 300
    assert parse_retry_after("-5") is None
    assert parse_retry_after("\u0661\u0662") is None  # Arabic-Indic digits pass isdigit()


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b"[1, 2]",
        b'{"token": 5}',
        b'{"token": ""}',
        b'{"token": {"a": 1}}',
        b"{" + b" " * 70_000 + b"}",
    ],
)
def test_odd_token_answers_are_upstream_errors(
    client: UpstreamClient, upstream: ThreadingHTTPServer, answer: bytes
) -> None:
    upstream.token_answer = answer  # type: ignore[attr-defined]
    with pytest.raises(UpstreamInvalid):
        client.fetch("GET", "/protected", scope="repository:x:pull")


def test_token_with_odd_lifetime_is_used(
    client: UpstreamClient, upstream: ThreadingHTTPServer
) -> None:
    upstream.token_answer = json.dumps({"token": "good", "expires_in": "soon"}).encode()  # type: ignore[attr-defined]
    assert client.fetch("GET", "/protected", scope="s").content == b"ok"


def test_refused_token_is_denied(client: UpstreamClient, upstream: ThreadingHTTPServer) -> None:
    upstream.token_answer = json.dumps({"token": "bad"}).encode()  # type: ignore[attr-defined]
    with pytest.raises(UpstreamDenied):
        client.fetch("GET", "/protected", scope="other")


def _chunked(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    h.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")


ROUTES["/blob"] = _reply(200, bytes(range(256)) * 4096)  # 1 MiB
ROUTES["/chunked"] = _chunked


def _read(source: Source) -> bytes:
    if source.readinto is None:
        return b"".join(source.chunks)
    body, view = bytearray(), memoryview(bytearray(64 * 1024))
    while n := source.readinto(view):
        body += view[:n]
    return bytes(body)


def test_a_streamed_body_of_known_length_is_read_from_the_socket(client: UpstreamClient) -> None:
    """The fast body reader (mirror.http.RawBody) reaches into httpx/httpcore/h11 internals
    (pinned in requirements.txt): this fails if an upgrade silently turns it off."""
    source = stream_source(client.send("GET", "/blob", metadata=False))
    try:
        assert source.readinto is not None and source.size == 1 << 20
        assert _read(source) == bytes(range(256)) * 4096
    finally:
        source.close()


def _streamed(client: UpstreamClient, path: str) -> bytes:
    source = stream_source(client.send("GET", path, metadata=False))
    try:
        return _read(source)
    finally:
        source.close()


@pytest.mark.parametrize(("path", "new_connections"), [("/big", 1), ("/blob", 3)])
def test_only_large_bodies_take_their_connection_with_them(
    client: UpstreamClient, upstream: ThreadingHTTPServer, path: str, new_connections: int
) -> None:
    """A body under RAW_BODY_MIN is read through h11, which sees its end: the connection
    serves the next request (over TLS, a handshake saved per small object). A larger one is
    read from the socket past h11, and its connection closed with it."""
    before = upstream.connections  # type: ignore[attr-defined]
    bodies = [_streamed(client, path) for _ in range(3)]
    assert len({*bodies}) == 1 and len(bodies[0]) in (5000, 1 << 20)
    assert upstream.connections - before == new_connections  # type: ignore[attr-defined]


@pytest.mark.parametrize("streamed", [False, True])
def test_bytes_past_an_answer_end_its_connection(
    client: UpstreamClient, upstream: ThreadingHTTPServer, streamed: bool
) -> None:
    """Where the next answer starts on a connection that carried bytes past the announced end
    is unknown (RFC 9112 section 6.3): the connection is closed, not kept, so the next request
    (on a new one) is answered rather than failed on the lying upstream's leftovers."""
    before = upstream.connections  # type: ignore[attr-defined]
    for _ in range(2):
        if streamed:
            assert _streamed(client, "/overlong") == b"hello"
        else:
            assert client.fetch("GET", "/overlong").content == b"hello"
        assert client.fetch("GET", "/small").content == b"hello"
    # The first connection, and a new one after each lying answer.
    assert upstream.connections - before == 3  # type: ignore[attr-defined]


def test_a_chunked_body_is_read_through_httpx(client: UpstreamClient) -> None:
    source = stream_source(client.send("GET", "/chunked", metadata=False))
    try:
        assert source.readinto is None and source.size is None
        assert _read(source) == b"hello"
    finally:
        source.close()


def test_every_client_verifies_tls_with_the_one_context_of_the_process(
    client: UpstreamClient,
) -> None:
    """Each client loaded the CA bundle itself before (25-150 ms and ~2.4 MiB each)."""
    other = UpstreamClient(dataclasses.replace(client.info, id=2, name="other"))
    contexts = {id(c._http._transport._pool._ssl_context) for c in (client, other)}  # type: ignore[attr-defined]
    assert contexts == {id(tls_context())}
    assert tls_context().verify_mode == ssl.CERT_REQUIRED and tls_context().check_hostname
