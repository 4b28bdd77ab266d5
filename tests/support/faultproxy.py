"""A threaded HTTP/1.1 reverse proxy that counts requests and injects faults.

Put it between the mirror under test and an upstream registry::

    with Registry() as upstream, FaultProxy(upstream.url) as proxy:
        proxy.corrupt = True
        ...  # point the mirror at proxy.url
        assert proxy.count("GET", "/blobs/") == 1

Fault knobs are plain attributes read on every request (or every body chunk), so a test can
flip them at any time. ``bearer=True`` emulates Docker Hub's token auth in front of an
upstream that has none.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.process import Service

__all__ = ["FaultProxy"]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  # request bodies, and a slowed body (delay_per_chunk)
# A body relayed at full speed: read1 returns what one receive gives, up to this much. With
# 64 KiB reads the relay took 0.5-1.5 ms of CPU per MiB (the benchmark's 2 CPUs are shared
# by everything it measures).
RELAY_CHUNK = 1024 * 1024
SERVICE = "faultproxy"

# Hop-by-hop headers (RFC 9110 7.6.1), never relayed; Expect is answered locally.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_REPO_PATH = re.compile(
    r"^/v2/(?P<name>.+?)/(?:manifests/[^/]+|blobs/uploads/[^/]*|blobs/[^/]+|tags/list"
    r"|referrers/[^/]+)$"
)
_QUIET_ERRORS = (OSError, http.client.HTTPException, ValueError)


class _Abort(Exception):
    """Raised inside a handler to drop the client connection silently."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.stopping = threading.Event()
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:
            if self.stopping.is_set():
                self.shutdown_request(request)
                return
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("faultproxy: error serving %s", client_address, exc_info=True)

    def close_all(self) -> None:
        """Abort every open client connection (wakes threads blocked on them)."""
        with self.conns_lock:
            conns = list(self.conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _body_state = "unread"  # of the current request's body: unread / reading / done

    # -- plumbing -------------------------------------------------------------------------
    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("faultproxy: " + fmt, *args)

    def handle(self) -> None:
        try:
            super().handle()
        except _Abort:
            self.close_connection = True
        except _QUIET_ERRORS as exc:
            # Broken pipes, resets, sockets closed by stop(): all normal for a fault proxy.
            log.debug("faultproxy: connection ended: %r", exc)
            self.close_connection = True
        except Exception:  # pragma: no cover - a bug in the proxy; log once, don't storm
            log.warning("faultproxy: handler crashed", exc_info=True)
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(_QUIET_ERRORS):
            super().finish()

    def __getattr__(self, name: str) -> Any:
        # Any method (GET, HEAD, PUT, PATCH, DELETE, POST, OPTIONS...) goes to _serve.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy

    # -- request body ---------------------------------------------------------------------
    def _iter_request_body(self) -> Iterator[bytes]:
        """Yield the client's request body in chunks (Content-Length or chunked)."""
        self._body_state = "reading"
        yield from self._read_body_chunks()
        self._body_state = "done"

    def _read_body_chunks(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                left = size
                while left:
                    data = self.rfile.read(min(left, CHUNK))
                    if not data:
                        raise _Abort
                    left -= len(data)
                    yield data
                self.rfile.readline(3)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, CHUNK))
                if not data:
                    raise _Abort
                left -= len(data)
                yield data

    def _has_request_body(self) -> bool:
        return "Content-Length" in self.headers or "Transfer-Encoding" in self.headers

    def _drain_request_body(self) -> None:
        """Consume an unread request body so the connection can be kept alive."""
        if self._body_state == "unread":
            for _ in self._iter_request_body():
                pass
        elif self._body_state == "reading":
            self.close_connection = True  # partly read: the stream is out of sync

    # -- simple local answers -------------------------------------------------------------
    def _answer(
        self,
        status: int,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> None:
        if self._has_request_body():
            self._drain_request_body()
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for key, value in [*(headers or []), *self.proxy.extra_headers]:
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    # -- main entry -----------------------------------------------------------------------
    def _serve(self) -> None:
        proxy = self.proxy
        self._body_state = "unread"
        proxy._record(self.command, self.path, self.headers)
        if proxy.hang:
            # Accept and never answer; stop() sets the event and closes the socket.
            self.server.stopping.wait()
            raise _Abort
        status = proxy.status
        if status is not None:
            headers = []
            if proxy.retry_after is not None:
                headers.append(("Retry-After", str(proxy.retry_after)))
            self._answer(status, b'{"errors":[]}', headers)
            return
        if proxy.bearer and not self._bearer_gate():
            return
        if proxy.delay_per_request > 0:
            time.sleep(proxy.delay_per_request)
        self._forward()

    # -- Docker Hub-like token auth -------------------------------------------------------
    def _bearer_gate(self) -> bool:
        """Handle token auth; return True when the request may be forwarded."""
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path == "/token":
            self._token_endpoint(parsed.query)
            return False
        if not parsed.path.startswith("/v2/") and parsed.path != "/v2":
            return True
        scope = self._required_scope(parsed.path)
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer " and self.proxy._token_allows(auth[7:].strip(), scope):
            return True
        challenge = f'Bearer realm="{self.proxy.url}/token",service="{SERVICE}"'
        if scope is not None:
            challenge += f',scope="{scope}"'
        body = json.dumps(
            {
                "errors": [
                    {
                        "code": "UNAUTHORIZED",
                        "message": "authentication required",
                        "detail": None if scope is None else [{"scope": scope}],
                    }
                ]
            }
        ).encode()
        self._answer(401, body, [("WWW-Authenticate", challenge)])
        return False

    def _required_scope(self, path: str) -> str | None:
        if path in ("/v2", "/v2/"):
            return None
        if path == "/v2/_catalog":
            return "registry:catalog:*"
        match = _REPO_PATH.match(path)
        name = match.group("name") if match else path[len("/v2/") :].strip("/")
        actions = "pull" if self.command in ("GET", "HEAD") else "pull,push"
        return f"repository:{name}:{actions}"

    def _token_endpoint(self, query: str) -> None:
        params = urllib.parse.parse_qs(query)
        if self.command == "POST":  # OAuth2-style form post, as some clients do
            form = b"".join(self._iter_request_body()).decode(errors="replace")
            for key, values in urllib.parse.parse_qs(form).items():
                params.setdefault(key, []).extend(values)
        elif self.command not in ("GET", "HEAD"):
            self._answer(405, b'{"errors":[]}')
            return
        basic = self.proxy.token_basic
        if basic is not None:
            expected = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            auth = self.headers.get("Authorization", "")
            form_ok = params.get("username") == [basic[0]] and params.get("password") == [basic[1]]
            if not (auth[:6].lower() == "basic " and auth[6:].strip() == expected) and not form_ok:
                self._answer(
                    401,
                    b'{"details":"incorrect username or password"}',
                    [("WWW-Authenticate", f'Basic realm="{SERVICE}"')],
                )
                return
        scopes = [s for value in params.get("scope", []) for s in value.split(" ") if s]
        token = self.proxy._issue_token(scopes)
        body = json.dumps(
            {
                "token": token,
                "access_token": token,
                "expires_in": self.proxy.token_expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ).encode()
        self._answer(200, body)

    # -- forwarding -----------------------------------------------------------------------
    def _forward(self) -> None:
        proxy = self.proxy
        up = proxy._upstream
        conn_cls = (
            http.client.HTTPSConnection if up.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(up.hostname or "127.0.0.1", up.port, timeout=proxy.upstream_timeout)
        proxy._track_upstream(conn, add=True)
        try:
            self._forward_with(conn)
        finally:
            proxy._track_upstream(conn, add=False)
            conn.close()

    def _forward_with(self, conn: http.client.HTTPConnection) -> None:
        proxy = self.proxy
        method = self.command
        has_body = self._has_request_body()
        chunked_body = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        try:
            conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", proxy._upstream.netloc)
            for key, value in self.headers.items():
                lower = key.lower()
                if lower in _HOP_BY_HOP or lower == "host":
                    continue
                if lower == "authorization" and proxy.bearer and value[:7].lower() == "bearer ":
                    continue  # our own tokens mean nothing upstream
                conn.putheader(key, value)
            if chunked_body:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            if has_body:
                for data in self._iter_request_body():
                    conn.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked_body else data)
                if chunked_body:
                    conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
        except _Abort:
            raise
        except (OSError, http.client.HTTPException) as exc:
            if self.server.stopping.is_set():
                raise _Abort from exc
            log.debug("faultproxy: upstream error: %r", exc)
            body = json.dumps(
                {"errors": [{"code": "UNAVAILABLE", "message": f"upstream error: {exc!r}"}]}
            )
            self._answer(502, body.encode())
            return
        self._relay(resp)

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        proxy = self.proxy
        method = self.command
        status = resp.status
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        length_header = resp.getheader("Content-Length")
        length = (
            int(length_header)
            if length_header and length_header.isdigit() and not resp.chunked
            else None
        )
        chunked_out = not no_body and length is None and self.request_version == "HTTP/1.1"
        if not no_body and length is None and not chunked_out:
            self.close_connection = True  # HTTP/1.0 client: body delimited by close

        self.send_response_only(status, resp.reason)
        upstream_base = proxy._upstream_base
        for key, value in resp.getheaders():
            lower = key.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower == "location" and value.startswith(upstream_base):
                value = proxy.url + value[len(upstream_base) :]
            self.send_header(key, value)
        for key, value in proxy.extra_headers:
            self.send_header(key, value)
        if chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if no_body:
            return

        is_blob_get = method == "GET" and "/blobs/" in self.path and 200 <= status < 300
        corrupt_at: int | None = None
        if is_blob_get and proxy.corrupt:
            corrupt_at = (length // 2) if length else -1  # -1: middle of first chunk
        cut_after = proxy.cut_after if is_blob_get else None
        sent = 0
        while True:
            delay = proxy.delay_per_chunk
            data = resp.read(CHUNK) if delay > 0 else resp.read1(RELAY_CHUNK)
            if not data:
                break
            if corrupt_at is not None:
                if corrupt_at < 0:
                    corrupt_at = len(data) // 2
                if sent <= corrupt_at < sent + len(data):
                    i = corrupt_at - sent
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
                    corrupt_at = None
            if cut_after is not None and sent + len(data) >= cut_after:
                self._write_body(data[: max(0, cut_after - sent)], chunked_out)
                self._cut()
            if delay > 0:
                time.sleep(delay)
                if self.server.stopping.is_set():
                    raise _Abort
            self._write_body(data, chunked_out)
            sent += len(data)
        if length is not None and sent < length:
            self._cut()  # upstream ended early: pass the truncation on
        if chunked_out:
            self.wfile.write(b"0\r\n\r\n")

    def _write_body(self, data: bytes, chunked: bool) -> None:
        if not data:
            return
        if chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def _cut(self) -> None:
        """Drop the client connection mid-body."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Abort


class FaultProxy(Service):
    """Reverse proxy to ``upstream_url`` with request counting and fault injection.

    Knobs (settable any time): ``delay_per_chunk`` seconds slept per 64 KiB body chunk;
    ``delay_per_request`` seconds slept before forwarding each request (a slow server);
    ``corrupt`` flips the middle byte of blob GET bodies; ``status`` (+ ``retry_after``)
    answers every request with that status and ``{"errors":[]}``; ``cut_after`` closes a blob
    GET after that many body bytes; ``hang`` accepts requests and never answers until stop;
    ``extra_headers`` (name, value) pairs are added to every answer, faulted ones included
    (e.g. Docker Hub's ``ratelimit-remaining: 5;w=21600``).
    ``bearer=True`` demands Docker Hub-style bearer tokens from ``/token`` (optionally
    guarded by Basic auth ``token_basic``). Without ``port`` a free one is picked by the
    first ``start()`` and kept for later restarts; ``url``/``port`` are valid after it.
    Every request (token requests and faulted ones included) is appended to ``requests``.
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        port: int | None = None,
        bearer: bool = False,
        token_basic: tuple[str, str] | None = None,
        token_expires_in: int = 300,
        upstream_timeout: float = 60.0,
    ) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self._upstream = urllib.parse.urlsplit(self.upstream_url)
        if self._upstream.scheme not in ("http", "https") or not self._upstream.hostname:
            raise ValueError(f"bad upstream URL: {upstream_url!r}")
        if self._upstream.path not in ("", "/") or self._upstream.query:
            raise ValueError(f"upstream URL must not have a path or query: {upstream_url!r}")
        self._upstream_base = f"{self._upstream.scheme}://{self._upstream.netloc}"
        self._port = port or 0
        self.bearer = bearer
        self.token_basic = token_basic
        self.token_expires_in = token_expires_in
        self.upstream_timeout = upstream_timeout
        # Fault knobs.
        self.delay_per_chunk: float = 0.0
        self.delay_per_request: float = 0.0
        self.corrupt: bool = False
        self.status: int | None = None
        self.retry_after: int | None = None
        self.cut_after: int | None = None
        self.hang: bool = False
        self.extra_headers: list[tuple[str, str]] = []
        # State.
        self.requests: list[tuple[str, str]] = []
        self._detailed: list[tuple[str, str, http.client.HTTPMessage]] = []
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[list[str], float]] = {}
        self._upstream_conns: set[http.client.HTTPConnection] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- properties -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        """Listening port (known after the first start() when none was given)."""
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, for image references."""
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        """Whether the proxy is currently listening."""
        return self._server is not None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Listen on 127.0.0.1 (same port as before on restart) and serve in a thread."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), self)
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"faultproxy-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection (clients get refused)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()  # releases hanging handlers, refuses racing accepts
        server.shutdown()
        server.server_close()
        server.close_all()
        with self._lock:
            upstream = list(self._upstream_conns)
        for conn in upstream:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- counting -------------------------------------------------------------------------
    def _record(self, method: str, path: str, headers: http.client.HTTPMessage) -> None:
        with self._lock:
            self.requests.append((method, path))
            self._detailed.append((method, path, headers))

    def requests_with_headers(self) -> list[tuple[str, str, http.client.HTTPMessage]]:
        """(method, path, request headers) for every request; headers' ``get`` ignores case."""
        with self._lock:
            return list(self._detailed)

    def count(self, method: str, path_contains: str) -> int:
        """Number of requests seen with this method whose path contains ``path_contains``."""
        method = method.upper()
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and path_contains in p)

    def reset(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self.requests.clear()
            self._detailed.clear()

    def clear_faults(self) -> None:
        """Turn every fault knob off."""
        self.delay_per_chunk = 0.0
        self.corrupt = False
        self.status = None
        self.retry_after = None
        self.cut_after = None
        self.hang = False
        self.extra_headers = []

    # -- tokens ---------------------------------------------------------------------------
    def _issue_token(self, scopes: list[str]) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (scopes, time.monotonic() + self.token_expires_in)
        return token

    def _token_allows(self, token: str, scope: str | None) -> bool:
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] < time.monotonic():
            return False
        if scope is None:
            return True
        want_type, _, rest = scope.partition(":")
        want_name, _, want_actions = rest.rpartition(":")
        for granted in entry[0]:
            g_type, _, g_rest = granted.partition(":")
            g_name, _, g_actions = g_rest.rpartition(":")
            if g_type != want_type or g_name != want_name:
                continue
            have = set(g_actions.split(","))
            if "*" in have or set(want_actions.split(",")) <= have:
                return True
        return False

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far (clients must fetch new ones)."""
        with self._lock:
            self._tokens.clear()

    def _track_upstream(self, conn: http.client.HTTPConnection, *, add: bool) -> None:
        with self._lock:
            if add:
                self._upstream_conns.add(conn)
            else:
                self._upstream_conns.discard(conn)

    def __repr__(self) -> str:
        return f"<FaultProxy {self.url} -> {self.upstream_url} running={self.running}>"
