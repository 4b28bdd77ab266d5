"""The upstream HTTP client: pooling, timeouts, auth (Basic and Bearer-token), Retry-After.

One `UpstreamClient` per configured upstream and process; it only ever sends requests to its
upstream's base URL (paths are joined to it), to the token realm that upstream names in its
own challenge, and to redirects that upstream answers with (a registry's blob CDN).
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import h11
import httpcore
import httpx
from django.conf import settings

from . import budgets, shared
from .content import Source
from .deadlines import DeadlineBackend, deadline
from .errors import (
    UpstreamDenied,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from .metrics import BYTES_FETCHED, UPSTREAM_ERRORS, UPSTREAM_LATENCY
from .upstreams import UpstreamInfo

log = logging.getLogger(__name__)

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
# Token lifetime assumed when the token endpoint gives none (the distribution spec's 60 s).
_DEFAULT_TOKEN_SECONDS = 60
# A token answer is a small JSON object; anything larger is not one.
MAX_TOKEN_ANSWER = 64 * 1024
# How long a 429's Retry-After may hold back our requests to that upstream, at most.
MAX_RETRY_AFTER = 300
# Content-Encoding -> zlib wbits (gzip header, zlib header); other codings are refused.
_INFLATE_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def _timeout(read: float | None = None) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT,
        read=read or settings.MIRROR_UPSTREAM_READ_TIMEOUT,
        write=settings.MIRROR_UPSTREAM_READ_TIMEOUT,
        pool=settings.MIRROR_UPSTREAM_CONNECT_TIMEOUT,
    )


def parse_retry_after(value: str) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or an HTTP date), capped;
    None when it is absent or malformed."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:6]), MAX_RETRY_AFTER))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return float(min(max(when.timestamp() - time.time(), 0), MAX_RETRY_AFTER))


@dataclass(frozen=True)
class Answer:
    """A small upstream answer, read whole (capped) within the metadata deadline."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; UpstreamInvalid when it is not JSON."""
        try:
            return json.loads(self.content)
        except ValueError as e:  # includes UnicodeDecodeError
            raise UpstreamInvalid(f"upstream answer is not JSON: {e}") from None


class _Inflater:
    """Decodes a Content-Encoding with bounded output: never more than `room` bytes at once,
    so a small gzip that inflates to gigabytes is refused at the cap, not held in memory."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        self._zlib = None
        if encoding in _INFLATE_WBITS:
            self._zlib = zlib.decompressobj(_INFLATE_WBITS[encoding])
        elif encoding not in ("", "identity"):
            raise UpstreamInvalid(f"unsupported Content-Encoding {encoding[:40]!r}")

    def feed(self, data: bytes, room: int) -> bytes:
        """Decode `data`; raise UpstreamInvalid when it decodes to more than `room` bytes."""
        if self._zlib is None:
            if len(data) > room:
                raise _OverCap
            return data
        try:
            out = self._zlib.decompress(data, room)
        except zlib.error as e:
            raise UpstreamInvalid(f"broken compressed answer: {e}") from None
        if self._zlib.unconsumed_tail:
            raise _OverCap
        return out

    def finish(self) -> None:
        if self._zlib is not None and not self._zlib.eof:
            raise UpstreamInvalid("compressed answer ends early")


class _OverCap(Exception):
    pass


def read_capped(response: httpx.Response, cap: int) -> bytes:
    """The decoded body of a streamed response, at most `cap` bytes; UpstreamInvalid above
    it (counted after decompression), UpstreamUnavailable when the connection fails."""
    inflater = _Inflater(response.headers.get("Content-Encoding", ""))
    body = bytearray()
    try:
        for raw in response.iter_raw():
            body += inflater.feed(raw, cap - len(body))
        inflater.finish()
    except _OverCap:
        raise UpstreamInvalid(f"upstream answer larger than {cap} bytes") from None
    except httpx.HTTPError as e:
        raise UpstreamUnavailable(f"upstream answer broke off: {type(e).__name__}") from e
    return bytes(body)


# Bodies from this size on are read by RawBody: below it, h11's copies cost less than the new
# connection that bypassing it takes for the next request.
RAW_BODY_MIN = 1 << 20


class RawBody:
    """The rest of a plain HTTP/1.1 `Content-Length` body, read from its socket straight
    into the caller's buffer (`readinto`).

    httpcore hands a streamed body to h11 64 KiB at a time, and h11 copies it twice through
    its receive buffer: measured here (512 MiB through the bench's proxy), 0.4-0.6 CPU s and
    1.9-2.1 s, against 0.15 CPU s and 0.7-1.3 s for reading the same socket with
    `recv_into`. The request, its redirects, auth and headers still go through httpx; only
    the body's bytes bypass it. The connection is never reused (h11 did not see the body
    end): closing the response closes it, so bodies under RAW_BODY_MIN go through httpx and
    leave their connection to the next request (to an upstream over TLS, a handshake for
    every small blob or module zip otherwise). Reads keep the response's read timeout.
    """

    def __init__(self, sock: socket.socket, buffered: bytes, remaining: int, timeout: float):
        self._sock = sock
        self._buffered = memoryview(buffered[:remaining])
        self._remaining = remaining
        self._timeout = timeout

    def readinto(self, view: memoryview) -> int:
        """Up to len(view) bytes of the body; 0 at its end. UpstreamUnavailable when the
        connection breaks or times out before the announced end."""
        if not self._remaining:
            return 0
        view = view[: self._remaining]
        if self._buffered:
            n = min(len(view), len(self._buffered))
            view[:n] = self._buffered[:n]
            self._buffered = self._buffered[n:]
        else:
            try:
                self._sock.settimeout(self._timeout)
                n = self._sock.recv_into(view)
            except OSError as e:  # socket.timeout included
                raise UpstreamUnavailable(f"upstream body broke off: {type(e).__name__}") from e
            if not n:
                raise UpstreamUnavailable(
                    f"upstream closed the connection {self._remaining} bytes before the end"
                )
        self._remaining -= n
        return n

    @classmethod
    def of(cls, response: httpx.Response) -> RawBody | None:
        """The raw body of `response`, or None when it is not a plain HTTP/1.1 body of known
        length of at least RAW_BODY_MIN bytes on a socket of httpcore's (then read it through
        httpx)."""
        try:
            # httpx's BoundSyncStream > ResponseStream > httpcore's PoolByteStream >
            # HTTP11ConnectionByteStream > HTTP11Connection (httpx 0.28, httpcore 1.0).
            pool_stream = response.stream._stream._httpcore_stream  # type: ignore[attr-defined]
            connection = pool_stream._stream._connection
            state: h11.Connection = connection._h11_state
            reader = state._reader
            stream = connection._network_stream
            sock = getattr(stream, "_stream", stream)._sock
        except AttributeError:
            return None
        if type(reader).__name__ != "ContentLengthReader" or not isinstance(sock, socket.socket):
            return None
        if reader._remaining < RAW_BODY_MIN:
            return None
        timeout = response.request.extensions.get("timeout", {}).get("read")
        buffered, closed = state.trailing_data
        if closed and len(buffered) < reader._remaining:
            return None  # the upstream closed early: let h11 say so
        return cls(
            sock, buffered, reader._remaining, timeout or settings.MIRROR_UPSTREAM_READ_TIMEOUT
        )


# A streamed body's bytes are added to BYTES_FETCHED per this many (and at its end), not per
# read: the body loop is the cold path's hot loop.
_COUNT_EVERY = 1 << 20
# Where `UpstreamClient._check` notes which upstream a response came from (for its metrics).
_UPSTREAM = "entrepot.upstream"


class _Fetched:
    """The bytes of one streamed upstream body, counted as they are read."""

    def __init__(self, response: httpx.Response) -> None:
        self._counter = BYTES_FETCHED.labels(response.extensions.get(_UPSTREAM, "none"))
        self._pending = 0

    def add(self, n: int) -> None:
        self._pending += n
        if self._pending >= _COUNT_EVERY:
            self._counter.inc(self._pending)
            self._pending = 0

    def flush(self) -> None:
        if self._pending:
            self._counter.inc(self._pending)
            self._pending = 0

    def chunks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.add(len(chunk))
            yield chunk

    def readinto(self, readinto: Callable[[memoryview], int]) -> Callable[[memoryview], int]:
        def counted(view: memoryview) -> int:
            n = readinto(view)
            self.add(n)
            return n

        return counted


def stream_source(response: httpx.Response) -> Source:
    """A fill's `Source` for a streamed upstream response (status already checked): its
    Content-Length, its raw bytes (no Content-Encoding is decoded), and how to close it."""
    length = response.headers.get("Content-Length", "")
    size = int(length) if length.isascii() and length.isdigit() else None
    raw = RawBody.of(response)
    fetched = _Fetched(response)

    def close() -> None:
        fetched.flush()
        response.close()

    return Source(
        size=size,
        chunks=fetched.chunks(response.iter_raw()) if raw is None else iter(()),
        close=close,
        readinto=None if raw is None else fetched.readinto(raw.readinto),
    )


def _error_kind(e: Exception) -> str:
    """The `kind` label of UPSTREAM_ERRORS for a failed exchange."""
    if isinstance(e, httpx.TimeoutException):
        return "timeout"
    if isinstance(e, httpx.TransportError):
        return "unreachable"
    return "invalid"


def _status_kind(status: int) -> str:
    if status in (404, 410):
        return "not_found"
    if status in (401, 403):
        return "denied"
    if status == 429:
        return "rate_limited"
    return "status_4xx" if status < 500 else "status_5xx"


class _Connection(httpcore.HTTPConnection):
    """httpcore's connection, not reused once its upstream sent bytes past the end of an
    answer: where the next answer starts on it is unknown (RFC 9112 section 6.3; curl closes
    such connections too), and h11 would read those bytes as the head of the next request's
    answer, failing an innocent request."""

    def has_expired(self) -> bool:
        state = getattr(self._connection, "_h11_state", None)  # HTTP/1.1 only
        if isinstance(state, h11.Connection) and self.is_idle() and state.trailing_data[0]:
            log.warning(
                "upstream %s sent %d bytes past the end of an answer: connection closed",
                self._origin.host.decode("ascii", "replace"),
                len(state.trailing_data[0]),
            )
            return True
        return super().has_expired()


class _Pool(httpcore.ConnectionPool):
    """The pool asks each connection whether it has expired before it hands one out: idle
    connections with bytes left over are closed there, under the pool's lock."""

    def create_connection(self, origin: httpcore.Origin) -> httpcore.ConnectionInterface:
        return _Connection(
            origin=origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            http1=self._http1,
            http2=self._http2,
            retries=self._retries,
            local_address=self._local_address,
            uds=self._uds,
            network_backend=self._network_backend,
            socket_options=self._socket_options,
        )


@cache
def tls_context() -> ssl.SSLContext:
    """The verifying TLS context of every upstream client of this process (httpx's default:
    certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR). Each client built its own before:
    loading the bundle took 25-150 ms and ~2.4 MiB of RSS per upstream and per worker
    (2026-12-03), paid by the first request to each upstream, and again after each edit."""
    return httpx.create_ssl_context()


def _transport() -> httpx.HTTPTransport:
    """httpx's transport with the deadline-aware socket backend (see mirror/deadlines.py)."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
    transport = httpx.HTTPTransport(limits=limits, verify=tls_context())
    transport._pool = _Pool(
        ssl_context=transport._pool._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=DeadlineBackend(),
    )
    return transport


class UpstreamClient:
    """HTTP access to one upstream. Thread-safe; share one per process."""

    def __init__(self, info: UpstreamInfo) -> None:
        self.info = info
        self._http = httpx.Client(
            base_url=info.url,
            timeout=_timeout(),
            follow_redirects=True,
            max_redirects=10,
            transport=_transport(),
            headers={"User-Agent": "entrepot"},
        )
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._uses_bearer = False

    def close(self) -> None:
        self._http.close()

    def fetch(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        scope: str = "",
        cap: int | None = None,
    ) -> Answer:
        """A small answer, whole: the exchange (token dance included) ends within
        MIRROR_UPSTREAM_METADATA_TIMEOUT, and the decoded body is at most `cap` bytes
        (MIRROR_MAX_METADATA_BYTES by default).

        Raises:
            UpstreamError: as `send`, plus UpstreamInvalid for an answer over the cap or with
                broken compression, and UpstreamUnavailable when the deadline passes.
        """
        cap = settings.MIRROR_MAX_METADATA_BYTES if cap is None else cap
        headers = {"Accept-Encoding": "gzip", **(headers or {})}
        with deadline(settings.MIRROR_UPSTREAM_METADATA_TIMEOUT):
            response = self.send(method, path, headers=headers, params=params, scope=scope)
            try:
                body = b"" if method == "HEAD" else read_capped(response, cap)
            except UpstreamInvalid:
                UPSTREAM_ERRORS.labels(self.info.name, "invalid").inc()
                raise
            except UpstreamUnavailable:
                UPSTREAM_ERRORS.labels(self.info.name, "broken").inc()
                raise
            finally:
                response.close()
        BYTES_FETCHED.labels(self.info.name).inc(len(body))
        return Answer(response.status_code, response.headers, body)

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        scope: str = "",
        metadata: bool = True,
    ) -> httpx.Response:
        """Send a request; return a 2xx/3xx response (body unread) or raise an Upstream* error.

        For small answers use `fetch`; this is for streamed bodies, which the caller reads and
        closes.

        Args:
            scope: the token scope this request needs (e.g. `repository:library/alpine:pull`).
            metadata: a small answer is expected: use the short read timeout, so that a hung
                upstream turns into a stale answer or an error within seconds.
        """
        if time.monotonic() < self._blocked_until:
            raise UpstreamUnavailable(
                f"{self.info.name} asked us to wait (Retry-After)",
                retry_after=self._blocked_until - time.monotonic(),
            )
        timeout = _timeout(settings.MIRROR_UPSTREAM_METADATA_TIMEOUT if metadata else None)
        for attempt in range(2):
            try:
                request = self._http.build_request(
                    method,
                    path,
                    headers=self._with_auth(headers or {}, scope),
                    params=params,
                    timeout=timeout,
                )
                started = time.monotonic()
                response = self._http.send(request, stream=True)
            except httpx.HTTPError as e:
                UPSTREAM_ERRORS.labels(self.info.name, _error_kind(e)).inc()
                if isinstance(e, httpx.TransportError):
                    raise UpstreamUnavailable(f"{self.info.name}: {type(e).__name__}") from e
                # A redirect loop, an invalid redirect URL, ...
                raise UpstreamInvalid(f"{self.info.name}: {type(e).__name__}") from e
            UPSTREAM_LATENCY.labels(self.info.name, method).observe(time.monotonic() - started)
            if response.status_code == 401 and attempt == 0:
                try:
                    retry = self._authenticate(response, scope)
                finally:
                    response.close()
                if retry:
                    continue
                UPSTREAM_ERRORS.labels(self.info.name, "denied").inc()
                raise UpstreamDenied(f"{self.info.name}: 401")
            return self._check(response)
        raise AssertionError("unreachable")

    def _check(self, response: httpx.Response) -> httpx.Response:
        """Pass 2xx/3xx on; close anything else unread (an error body is never read) and
        raise the error it means."""
        status = response.status_code
        retry = (
            parse_retry_after(response.headers.get("Retry-After", "")) if status == 429 else None
        )
        budgets.observe(self.info.id, status, response.headers, retry)
        if status < 400:
            response.extensions[_UPSTREAM] = self.info.name
            return response
        response.close()
        UPSTREAM_ERRORS.labels(self.info.name, _status_kind(status)).inc()
        name = self.info.name
        if status in (404, 410):
            raise UpstreamNotFound(f"{name}: {status}")
        if status in (401, 403):
            raise UpstreamDenied(f"{name}: {status}")
        if status == 429:
            if retry:
                self._blocked_until = time.monotonic() + retry
            raise UpstreamUnavailable(f"{name}: rate-limited (429)", retry_after=retry)
        raise UpstreamUnavailable(f"{name}: upstream answered {status}")

    def _with_auth(self, headers: dict[str, str], scope: str) -> dict[str, str]:
        headers = dict(headers)
        token = self._cached_token(scope)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif not self._uses_bearer and (creds := self.info.credentials()):
            headers["Authorization"] = httpx.BasicAuth(*creds)._auth_header
        return headers

    def _token_key(self, scope: str) -> str:
        # Per upstream URL and user: a token got with other credentials is not this one's.
        creds = self.info.credentials()
        return shared.key("upstream-token", self.info.url, creds[0] if creds else "", scope)

    def _cached_token(self, scope: str) -> str | None:
        """This process's token for `scope`; for an upstream that wants tokens, also one
        another instance got (mirror/shared.py)."""
        with self._lock:
            entry = self._tokens.get(scope)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return self._shared_token(scope) if self._uses_bearer else None

    def _shared_token(self, scope: str) -> str | None:
        found = shared.get(self._token_key(scope))
        if not (isinstance(found, tuple) and len(found) == 2):
            return None
        token, expires = found
        left = expires - time.time()
        if left <= 0:
            return None
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + left)
        return token

    def _authenticate(self, response: httpx.Response, scope: str) -> bool:
        """Follow a `WWW-Authenticate: Bearer realm=...` challenge; True if a token was got.

        The token is cached under the caller's `scope`, so the next request for that scope
        sends it at once instead of collecting a 401 first.
        """
        challenge = response.headers.get("WWW-Authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("http://", "https://")):
            return False
        self._uses_bearer = True
        # Another instance's token, unless it is the one this 401 just refused.
        token = self._shared_token(scope)
        if token and response.request.headers.get("Authorization") != f"Bearer {token}":
            return True
        creds = self.info.credentials()
        name = self.info.name
        with deadline(settings.MIRROR_UPSTREAM_METADATA_TIMEOUT):
            try:
                answer = self._http.send(
                    self._http.build_request(
                        "GET",
                        realm,
                        params={k: v for k, v in params.items() if k in ("service", "scope")},
                        headers={"Accept-Encoding": "gzip"},
                        timeout=_timeout(settings.MIRROR_UPSTREAM_METADATA_TIMEOUT),
                    ),
                    auth=httpx.BasicAuth(*creds) if creds else None,
                    stream=True,
                )
            except httpx.TransportError as e:
                raise UpstreamUnavailable(f"{name}: token endpoint unreachable") from e
            except httpx.HTTPError as e:
                raise UpstreamInvalid(f"{name}: token endpoint: {type(e).__name__}") from e
            try:
                if answer.status_code in (401, 403):
                    raise UpstreamDenied(f"{name}: token endpoint refused us")
                if answer.status_code != 200:
                    raise UpstreamUnavailable(f"{name}: token endpoint {answer.status_code}")
                body = read_capped(answer, MAX_TOKEN_ANSWER)
            finally:
                answer.close()
        token, lifetime = _token_from(body, name)
        # Renew a little before expiry, so that a token never dies mid-request.
        usable = max(lifetime - 10, lifetime / 2)
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + usable)
        shared.put(self._token_key(scope), (token, time.time() + usable), usable)
        return True


def _token_from(body: bytes, name: str) -> tuple[str, float]:
    """(token, lifetime in seconds) from a token endpoint's JSON answer; UpstreamInvalid for
    anything but an object with a non-empty string token."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise UpstreamInvalid(f"{name}: token answer is not JSON") from None
    if not isinstance(answer, dict):
        raise UpstreamInvalid(f"{name}: token answer is not a JSON object")
    token = answer.get("token") or answer.get("access_token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_ANSWER:
        raise UpstreamInvalid(f"{name}: token endpoint gave no usable token")
    lifetime = answer.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = _DEFAULT_TOKEN_SECONDS
    return token, float(min(lifetime, 24 * 3600))


_clients: dict[str, tuple[float, UpstreamClient]] = {}
_clients_lock = threading.Lock()


def client_for(info: UpstreamInfo) -> UpstreamClient:
    """The shared client of an upstream (recreated when its configuration changes)."""
    with _clients_lock:
        entry = _clients.get(info.name)
        if entry is None or entry[0] != info.updated:
            # The old client is not closed: fills in flight still read through it, and it
            # closes its connections when the last of them lets it go.
            entry = (info.updated, UpstreamClient(info))
            _clients[info.name] = entry
        return entry[1]
