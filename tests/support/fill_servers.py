"""A small OCI upstream whose blob bodies misbehave, for the fill's limits end to end.

Every blob exists (HEAD answers 200), and its GET body depends on the repository name:
- `.../endless/...`: a chunked body that never ends (no Content-Length);
- any other name: announces TRICKLE bytes (about 20 s of it), sends 512 KiB at once, then
  4 KiB every 50 ms.
Each GET records how many bytes it sent and sets `ended` when the mirror stopped reading it
(a write failed) or the body ended.
"""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.net import free_port

CHUNK = 64 * 1024
TRICKLE = 2_000_000


class Body:
    """One GET's body as the server sent it."""

    def __init__(self) -> None:
        self.sent = 0
        self.ended = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        if "/blobs/" not in self.path:
            self._empty(200 if self.path == "/v2/" else 404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(64 << 20))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_GET(self) -> None:
        if "/blobs/" not in self.path:
            self._empty(200 if self.path == "/v2/" else 404)
            return
        body = Body()
        self.server.bodies.append(body)
        try:
            if "/endless/" in self.path:
                self._endless(body)
            else:
                self._trickle(body)
        except OSError:
            pass  # the mirror stopped reading
        finally:
            body.ended.set()
            self.close_connection = True

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _endless(self, body: Body) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        data = os.urandom(CHUNK)
        while not self.server.stopping.is_set():
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            body.sent += len(data)

    def _trickle(self, body: Body) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(TRICKLE))
        self.end_headers()
        self.wfile.write(os.urandom(512 * 1024))
        body.sent += 512 * 1024
        while not self.server.stopping.is_set() and body.sent < TRICKLE:
            time.sleep(0.05)
            piece = min(4096, TRICKLE - body.sent)
            self.wfile.write(os.urandom(piece))
            self.wfile.flush()
            body.sent += piece


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.bodies: list[Body] = []
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", port), _Handler)


class BodyServer:
    """The misbehaving upstream; `bodies` lists the blob GETs it answered, in order."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = _Server(self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bodies(self) -> list[Body]:
        return self._server.bodies

    def __enter__(self) -> BodyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
