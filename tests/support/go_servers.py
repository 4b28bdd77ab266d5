"""Small misbehaving servers for the Go tests: a GOPROXY upstream whose answers a test can
script (wrong shapes, trickling bodies, slow answers), and a proxy that tampers with a
checksum database's answers. Both count what they are asked.

    upstream = GoUpstream(tree).start()        # serves the static tree...
    upstream.script("/example.com/m/@latest", b'{"Version": 5}')   # ...except this path
    upstream.script("/example.com/m/@v/list", b"v1.0.0\\n", trickle=1.0)  # 1 byte a second
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.support.process import Service

__all__ = ["GoUpstream", "Scripted", "SumdbTamper"]


@dataclass
class Scripted:
    """One scripted answer: `body` with `status`, after `delay` seconds, sent one byte every
    `trickle` seconds when set."""

    body: bytes
    status: int = 200
    delay: float = 0.0
    trickle: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128


class _CountingServer(Service):
    """A threaded HTTP server on 127.0.0.1 that records every request path."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def start(self) -> _CountingServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                with owner._lock:
                    owner.requests.append(path)
                try:
                    owner.answer(self)
                except OSError:
                    self.close_connection = True  # the mirror gave up on us

        self.stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def count(self, contains: str) -> int:
        with self._lock:
            return sum(1 for path in self.requests if contains in path)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


class GoUpstream(_CountingServer):
    """A GOPROXY upstream serving the static tree at `root` (written by
    tests.support.gomodules.write_tree), except for the paths a test scripts."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.scripted: dict[str, Scripted] = {}

    def script(self, path: str, body: bytes, **kwargs: float) -> None:
        """Answer GET `path` (unescaped, e.g. `/example.com/m/@v/list`) with `body`."""
        self.scripted[path] = Scripted(body, **kwargs)  # type: ignore[arg-type]

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path)
        scripted = self.scripted.get(path)
        if scripted is None:
            file = (self.root / path.lstrip("/")).resolve()
            if file.is_relative_to(self.root.resolve()) and file.is_file():
                self.send(handler, 200, file.read_bytes())
            else:
                self.send(handler, 404, b"not found\n")
            return
        if self.stopping.wait(scripted.delay):
            return
        if not scripted.trickle:
            self.send(handler, scripted.status, scripted.body)
            return
        handler.send_response(scripted.status)
        handler.send_header("Content-Length", str(len(scripted.body)))
        handler.end_headers()
        for i in range(len(scripted.body)):
            handler.wfile.write(scripted.body[i : i + 1])
            handler.wfile.flush()
            if self.stopping.wait(scripted.trickle):
                return


class SumdbTamper(_CountingServer):
    """A proxy in front of a checksum database that passes every answer on, after `delay`
    seconds, except that `tamper(path, body)` (when set) rewrites the bodies of `tile/`
    answers."""

    def __init__(self, upstream_url: str) -> None:
        super().__init__()
        self.upstream_url = upstream_url
        self.tamper: Callable[[str, bytes], bytes] | None = None
        self.delay = 0.0

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        upstream = httpx.get(self.upstream_url + handler.path, timeout=10)
        body = upstream.content
        if self.tamper is not None and handler.path.startswith("/tile/"):
            body = self.tamper(handler.path, body)
        if self.delay and self.stopping.wait(self.delay):
            return
        self.send(handler, upstream.status_code, body)
