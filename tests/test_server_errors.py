"""Issue 7, points 3 and 4: error answers in each protocol's format, never Django's HTML; no
body on HEAD error answers; the admin's framing and content policies; nosniff everywhere."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from django.http import HttpResponseBase, JsonResponse
from django.test import RequestFactory

from config.errors import server_error
from config.middleware import site_rules
from tests.conftest import Upstreams, write_config
from tests.mirror_server import MirrorServer

OCI_PATHS = ["/v2/library/alpine/manifests/latest", "/v2/"]
GO_PATHS = ["/example.com/mod/@v/list", "/example.com/mod/@latest", "/sumdb/sum.golang.org/latest"]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams
) -> Iterator[MirrorServer]:
    data = tmp_path_factory.mktemp("errors")
    server = MirrorServer(data / "var", write_config(data / "mirror.yml", upstreams))
    server.setup()
    server.start()
    yield server
    server.stop()


def _assert_oci(response: httpx.Response | HttpResponseBase, status: int, code: str) -> None:
    """Django's and httpx's answers both have these attributes."""
    assert response.status_code == status
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.content)["errors"][0]["code"] == code


@pytest.mark.parametrize("path", OCI_PATHS)
def test_handler500_oci_envelope(path: str) -> None:
    response = server_error(RequestFactory().get(path))
    _assert_oci(response, 500, "UNKNOWN")


@pytest.mark.parametrize("path", GO_PATHS)
def test_handler500_go_plain_text(path: str) -> None:
    response = server_error(RequestFactory().get(path))
    assert response.status_code == 500
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == b"internal server error\n"


@pytest.mark.parametrize("path", ["/", "/admin/login/", "/readyz", "/v2x"])
def test_handler500_json_elsewhere(path: str) -> None:
    response = server_error(RequestFactory().get(path))
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"error": "internal server error"}


def test_too_many_query_fields_is_not_html(server: MirrorServer) -> None:
    """Django refuses more than 1000 query fields (SuspiciousOperation): handler400."""
    query = "&".join("a" * 1001)
    oci = httpx.get(f"{server.url}/v2/library/alpine/tags/list?{query}")
    _assert_oci(oci, 400, "UNKNOWN")
    admin = httpx.get(f"{server.url}/admin/login/?{query}")
    assert admin.status_code == 400 and admin.json() == {"error": "bad request"}


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /v2/" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # 414
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n",  # 400
        b"G<T /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",  # invalid method
    ],
)
def test_unparseable_requests_are_not_html(server: MirrorServer, request_head: bytes) -> None:
    """gunicorn answers these itself, before Django: plain text, not its HTML page."""
    answer = _raw_exchange(server, request_head)
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert answer.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5"))
    assert b"content-type: text/plain" in head and b"<html" not in answer.lower()


def test_database_down_answers_in_protocol_format(server: MirrorServer) -> None:
    """The database file is gone (a directory stands in its place), so every query raises:
    each protocol answers 503 in its own format with Retry-After (issue 10: an outage of the
    database is "try again", never a 500), and HEAD with no body."""
    db = server.data_dir / "entrepot.sqlite3"
    aside = db.with_name("aside.sqlite3")
    db.rename(aside)
    db.mkdir()
    try:
        oci = httpx.get(f"{server.url}/v2/library/dbdown/manifests/1")
        _assert_oci(oci, 503, "UNAVAILABLE")
        assert oci.headers["Retry-After"].isdigit()
        go = httpx.get(f"{server.url}/example.com/dbdown/@v/list")
        assert go.status_code == 503 and go.headers["Retry-After"].isdigit()
        assert go.text == "unavailable: the mirror's database is unavailable\n"
        head = httpx.head(f"{server.url}/v2/library/dbdown/manifests/1")
        assert head.status_code == 503 and head.content == b""
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        # Pages outside the protocols: a plain 503 too.
        for page in ("/", "/admin/login/?next=/admin/"):
            answer = httpx.get(f"{server.url}{page}", cookies={"sessionid": "x" * 32})
            assert answer.status_code == 503, (page, answer.status_code)
            assert answer.headers["Retry-After"].isdigit()
    finally:
        shutil.rmtree(db)
        aside.rename(db)
    assert "<html" not in server.log.read_text().lower()


def _raw_exchange(server: MirrorServer, requests: bytes) -> bytes:
    """Send pipelined requests on one connection; read until the server closes it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(requests)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_an_overlong_request_line_is_refused_before_it_ends(server: MirrorServer) -> None:
    """Past the longest request line the parser takes (gunicorn's 4094 bytes), a 414 at once,
    whether or not the line has ended: not a 408 once the head deadline has passed."""
    for tail in (b"", b" HTTP/1.1\r\nHost: m\r\n\r\n"):
        started = time.monotonic()
        raw = _raw_exchange(server, b"GET /" + b"x" * 10_000 + tail)
        assert raw.startswith(b"HTTP/1.1 414 "), raw[:80]
        assert time.monotonic() - started < 3


def test_an_overlong_header_field_is_refused_before_it_ends(server: MirrorServer) -> None:
    """Past the longest header field the parser takes (gunicorn's 8190 bytes), a 431 at once,
    whether or not the field or the head has ended; the connection is closed."""
    field = b"GET /healthz HTTP/1.1\r\nHost: m\r\nX-Long: " + b"a" * 10_000
    for tail in (b"", b"\r\n", b"\r\n\r\n"):
        started = time.monotonic()
        raw = _raw_exchange(server, field + tail)
        assert raw.startswith(b"HTTP/1.1 431 "), raw[:80]
        assert time.monotonic() - started < 3
    # Just under the limit, an unfinished head still waits for its end (or the deadline).
    with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * 8000)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.sendall(b"\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")


def test_a_tls_handshake_on_the_plain_port_is_refused_at_once(server: MirrorServer) -> None:
    """Bytes no HTTP method has (a TLS ClientHello: the client was told https) get a 400 at
    once, not a 408 once the head deadline has passed; one empty line before a request that
    comes in pieces is still allowed (RFC 9112 2.2)."""
    hello = bytes.fromhex("160301020001") + bytes(40)
    started = time.monotonic()
    raw = _raw_exchange(server, hello)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert time.monotonic() - started < 3
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\r\nGE")
        time.sleep(0.2)
        sock.sendall(b"T /healthz HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v2/nothing/here/at/all", 404), ("/example.com/nomod/@v/list", 404), ("/admin/login/", 200)],
)
def test_head_has_no_body(server: MirrorServer, path: str, status: int) -> None:
    get = httpx.get(f"{server.url}{path}")
    assert get.status_code == status and get.content
    raw = _raw_exchange(
        server,
        f"HEAD {path} HTTP/1.1\r\nHost: m\r\n\r\n"
        "GET /healthz HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n".encode(),
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")  # the next answer follows the head at once
    # The application sent no body for gunicorn to drop (it logs a warning when it has to).
    assert "no-body response" not in server.log.read_text()


def test_head_error_keeps_the_get_content_length() -> None:
    error = JsonResponse({"error": "nope"}, status=404)
    response = site_rules(lambda request: error)(RequestFactory().head("/x"))
    assert response.content == b"" and response["Content-Length"] == str(len(b'{"error": "nope"}'))


def test_admin_frame_and_content_policies(server: MirrorServer) -> None:
    login = httpx.get(f"{server.url}/admin/login/")
    assert login.status_code == 200
    assert login.headers["X-Frame-Options"] == "DENY"
    csp = login.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp


def test_nosniff_on_every_answer(server: MirrorServer, upstreams: Upstreams) -> None:
    layout = upstreams.seed("library/sniff:1", layer_sizes=[1000])
    digest = layout.layer_digests["linux/amd64"][0]
    paths = [
        "/healthz",
        "/readyz",
        "/v2/",
        "/v2/sniff/manifests/1",
        f"/v2/sniff/blobs/{digest}",
        "/v2/nothing/here/at/all",
        "/example.com/nomod/@v/list",
        "/admin/login/",
        "/no/such/path",
    ]
    for path in paths:
        response = httpx.get(f"{server.url}{path}")
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        assert "text/html" not in response.headers["Content-Type"] or path == "/admin/login/"
