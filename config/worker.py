"""gunicorn's gthread worker, with each request head read in the poller under a total deadline.

Why: gthread hands a connection to a thread as soon as it is readable, and that thread then
blocks until the whole request head has arrived. Clients that send one byte every few seconds
hold one thread each for as long as they like: 300 of them held every thread of the test server
(2 processes x 32 threads) and /healthz timed out (tests/test_server_slowclients.py). gunicorn
27 has no deadline for the head; its 5 s "worker data timeout" only covers the first byte.

Here each worker's main loop reads request heads without blocking, as their bytes arrive, and hands
a connection to a thread only once its head is complete (the empty line that ends it), so a thread
is only taken by a request it can serve at once. A head not complete within
MIRROR_REQUEST_HEAD_TIMEOUT seconds of the connection's start (of its first byte, on a kept-alive
connection) is answered 408 and closed. A head the parser would refuse whatever came next (a
request line or a header field longer than it takes, a method with a byte no method has, as a TLS
handshake sent to this plain port) is answered at once, 414, 431 or 400, not 408. Everything after
the head is gthread's: responses and sendfile for `wsgi.file_wrapper` are unchanged. Request bodies
are still read in the thread: the protocol endpoints read none (gunicorn drains an unread body
within 5 s and 64 KiB), the admin's forms are small. The number of connections a process holds
stays bounded by `worker_connections` (config/gunicorn.py).

A thread that has answered a kept-alive connection serves the connection's next request too when
that request's whole head is already there (pipelined), or arrives within LINGER: the go
command and registry clients send their next request on a connection as soon as they have
read an answer, and every round trip through the poller costs two thread hand-offs (a wake-up
of the main loop through its pipe, a task queue) and a poller registration. A head not
complete by then goes the poller's way above, with what has arrived of it. Only while at most
LINGER_WHEN_SERVING threads of the process are serving: under a heavier load, threads that keep
their connections starve the rest of the GIL (wrk -c32 on a warm Go .info: p99 78-294 ms
against 40-50 ms), and the poller's first-come order is fairer.
Measured (2026-12-03, this machine, A/B against the worker without it, 4 and 12 interleaved
rounds): warm Go .info over one connection 1.7-1.8k requests/s against 1.0-1.2k (p50 0.52-0.62
ms against 0.80-0.92 ms); with 32 connections 1.6-2.3k against 1.3-2.1k, p99 50-73 ms against
58-90 ms; `go mod download` of 100 modules (bench/goab.py) warm 0.93 s against 1.00 s, cold
1.75 s against 1.92 s (medians).

Measured (2 shared cores, 2 processes x 32 threads, 300 connections sending one byte every 5 s,
tests/test_server_slowclients.py, three runs): with gthread, /healthz did not answer within
10 s; with this worker /healthz answered in 0.02-0.11 s, a cold manifest in 0.06-0.17 s and a
cold 2 MiB blob in 0.09-0.19 s, and every slow connection got its 408 at 6.1 s (deadline 6 s).
Warm throughput (`wrk`, `bench` settings, A/B against gthread on the same machine, noisy):
manifests and 64 MiB blobs within the run-to-run spread of gthread.

Plain HTTP/1.1 (and its h2c upgrade) only: the head is read from the raw socket, so TLS and
HTTP/2 prior knowledge are refused at start (terminate TLS in front of the mirror).
"""

from __future__ import annotations

import contextlib
import selectors
import threading
import time
from functools import partial

from django.conf import settings
from gunicorn import util
from gunicorn.errors import ConfigError
from gunicorn.http.errors import InvalidRequestMethod, LimitRequestHeaders, ParseException
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.workers.gthread import TConn, ThreadWorker


def _plain_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own answers to requests it cannot parse (400, 414, 431, 501), as plain text
    instead of its HTML page: nothing from the mirror's origin is HTML."""
    body = f"{status_int} {reason}: {mesg}\n".encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# Worker.handle_error answers through this module function; there is no setting for it.
util.write_error = _plain_error

# How long a thread waits for the next request on the connection it has just answered
# (module docstring); at most this much of a thread per answer.
LINGER = 0.002
LINGER_WHEN_SERVING = 4  # threads serving in the process, this one included
NOTIFY_EVERY = 1.0  # seconds between heartbeats to the arbiter
# The bytes an HTTP method may have (RFC 9110 5.6.2 tchar, as gunicorn's parser checks them).
METHOD_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class _Head:
    """The bytes of a request head read so far, and when it must be complete."""

    __slots__ = ("data", "deadline", "polled", "sized")

    def __init__(self, data: bytes, deadline: float) -> None:
        self.data = bytearray(data)
        self.deadline = deadline
        self.polled = False  # registered with the poller
        self.sized = 0  # where the first line not yet measured starts (`_field_too_long`)


def _receive(sock) -> bytes | None:
    """What the client sent (one read): None when nothing came (a non-blocking socket, or
    one whose timeout passed), b"" when the client left or reset the connection."""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError, TimeoutError):
        return None
    except OSError:
        return b""


def max_line_size(cfg) -> int:
    """The longest request line gunicorn's parser accepts; past it, it answers 414."""
    return cfg.limit_request_line if 0 < cfg.limit_request_line < MAX_REQUEST_LINE else 1 << 20


def max_field_size(cfg) -> int:
    """The longest header field (with its CRLF) gunicorn's parser accepts; past it, 431."""
    size = cfg.limit_request_field_size
    return size if size > 0 else DEFAULT_MAX_HEADERFIELD_SIZE


def max_head_size(cfg) -> int:
    """The largest head gunicorn's parser accepts; past it, the parser answers the error."""
    line = max_line_size(cfg)
    fields = cfg.limit_request_fields
    fields = fields if 0 < fields <= MAX_HEADERS else MAX_HEADERS
    return line + fields * (max_field_size(cfg) + 2) + 4


def head_complete(data: bytes | bytearray) -> bool:
    """True once the head has ended, or has a bare LF (which the parser refuses at once)."""
    return b"\r\n\r\n" in data or data.count(b"\n") != data.count(b"\r\n")


def _request_line_start(data: bytes | bytearray) -> int:
    """Where the request line starts: after the one empty line that may come before it (RFC
    9112 2.2)."""
    return 2 if data[:2] == b"\r\n" else 0


def _bad_method(data: bytes | bytearray) -> bool:
    """Whether the request line's method, as far as it has come, has a byte that no method
    has."""
    start = _request_line_start(data)
    end = len(data)
    for stop in (b" ", b"\r", b"\n"):
        if 0 <= (at := data.find(stop, start, end)) < end:
            end = at
    return bool(bytes(data[start:end]).translate(None, METHOD_BYTES))


class HeadFirstWorker(ThreadWorker):
    """gthread, except that a connection reaches a thread only with a complete request head."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = 10.0
        self.max_head = max_head_size(self.cfg)
        self.max_line = max_line_size(self.cfg) + 2  # CRLF
        self.max_field = max_field_size(self.cfg)
        # Connections reading a head, in deadline order (one timeout for all).
        self.heads: dict[TConn, _Head] = {}
        self.notified = -NOTIFY_EVERY  # when the arbiter was last told this worker is alive
        self.serving = 0  # threads in `handle`
        self.serving_lock = threading.Lock()

    @classmethod
    def check_config(cls, cfg, log) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl or cfg.http2_cleartext in ("prior-knowledge", "both"):
            raise ConfigError(
                f"{cls.__name__} serves plain HTTP/1.1 (no TLS, no h2c prior knowledge)"
            )

    def notify(self) -> None:
        """Tell the arbiter this worker is alive at most every NOTIFY_EVERY seconds. gthread
        does it on every turn of its main loop (several per request): an `os.utime` of a file
        in the temporary folder, 10 % of the CPU a worker spent on a warm `go mod download`
        (py-spy, 2026-12-02). The arbiter only needs one within `timeout` (60 s)."""
        now = time.monotonic()
        if now - self.notified >= NOTIFY_EVERY:
            self.notified = now
            super().notify()

    def handle(self, conn: TConn) -> object:  # gthread's True, False or its _DEFER
        """gthread's, then the connection's next requests whose heads are here in time."""
        with self.serving_lock:
            self.serving += 1
        try:
            keepalive = super().handle(conn)
            while keepalive is True and self.alive and self.serving <= LINGER_WHEN_SERVING:
                head = self._next_head(conn)
                if head is None:  # the client left
                    return False
                if not head:
                    break
                keepalive = super().handle(conn)
            return keepalive
        finally:
            with self.serving_lock:
                self.serving -= 1

    def _next_head(self, conn: TConn) -> bool | None:
        """Whether the connection's next request head is `_parseable`, read ahead or arrived
        within LINGER; what came of it stays buffered either way. None once the client has
        closed."""
        data = conn.parser.unreader.take_buffered()
        if not self._parseable(data):
            conn.sock.settimeout(LINGER)
            chunk = _receive(conn.sock)
            if chunk == b"":
                return None
            data += chunk or b""
        conn.parser.unreader.unread(data)
        return self._parseable(data)

    def _parseable(self, data: bytes | bytearray) -> bool:
        """Whether the parser can answer the head now: it is complete, or longer than the
        parser accepts (then it answers 414 or 431 at once, not 408 at the deadline)."""
        if head_complete(data) or len(data) > self.max_head:
            return True
        return len(data) > self.max_line and b"\n" not in data

    def _refusal(self, head: _Head) -> ParseException | None:
        """The error the parser will answer the unfinished head with whatever comes next, if
        that is known already: a method with a byte no method has (a TLS handshake or other
        binary sent to this plain HTTP port), or a header field past its limit."""
        if _bad_method(head.data):
            method = bytes(head.data[:20]).decode("latin-1")
            return InvalidRequestMethod(method.encode("unicode_escape").decode())
        if self._field_too_long(head):
            return LimitRequestHeaders("limit request headers fields size")
        return None

    def _field_too_long(self, head: _Head) -> bool:
        """Whether a header field of the unfinished head, ended or not, is already longer than
        the parser accepts (whatever comes next, the parser would answer 431). Each line is
        measured once it has ended, the last one as it grows."""
        data = head.data
        if not head.sized:  # past the request line (`_parseable` bounds that one)
            head.sized = data.find(b"\n", _request_line_start(data)) + 1
            if not head.sized:
                return False
        while (end := data.find(b"\n", head.sized)) >= 0:
            if end - head.sized > self.max_field:
                return True
            head.sized = end + 1
        return len(data) - head.sized > self.max_field

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.head_timeout = settings.MIRROR_REQUEST_HEAD_TIMEOUT

    def enqueue_req(self, conn: TConn) -> None:
        """Every way to a thread (accept, a readable kept-alive connection, bytes read ahead)
        comes here: read the head first."""
        buffered = conn.parser.unreader.take_buffered() if conn.initialized else b""
        head = _Head(buffered, time.monotonic() + self.head_timeout)
        if self._parseable(head.data):
            self._hand_over(conn, head)
            return
        if conn.sock.getblocking():
            conn.sock.setblocking(False)
        self.heads[conn] = head
        self._read(conn)  # the bytes are often there already

    def _read(self, conn: TConn, _fileobj: object = None) -> None:
        head = self.heads[conn]
        chunk = _receive(conn.sock)
        if chunk == b"":  # the client left (or reset the connection)
            self._drop(conn)
            return
        if chunk:
            head.data += chunk
            if self._parseable(head.data):
                self._unpoll(conn, head)
                del self.heads[conn]
                self._hand_over(conn, head)
                return
        if (error := self._refusal(head)) is not None:
            # The parser only judges a line once it has ended, and a thread must not wait for
            # that: answer its error here, not a 408 at the deadline.
            self.handle_error(None, conn.sock, conn.client, error)
            self._drop(conn)
            return
        if not head.polled:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read, conn))
            head.polled = True

    def _hand_over(self, conn: TConn, head: _Head) -> None:
        conn.init()  # the parser, on a blocking socket (nothing to do on a kept-alive one)
        conn.parser.unreader.unread(bytes(head.data))
        super().enqueue_req(conn)

    def _unpoll(self, conn: TConn, head: _Head) -> None:
        if head.polled:
            self.poller.unregister(conn.sock)
            head.polled = False

    def _drop(self, conn: TConn) -> None:
        self._unpoll(conn, self.heads.pop(conn))
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Answer 408 to the heads past their deadline (runs at least once a second)."""
        super().murder_pending()
        now = time.monotonic()
        while self.heads:
            conn, head = next(iter(self.heads.items()))
            if head.deadline > now:
                break
            with contextlib.suppress(OSError):
                conn.sock.send(REQUEST_TIMEOUT)
            self._drop(conn)
