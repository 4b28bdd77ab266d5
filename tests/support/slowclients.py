"""Slow clients ("slowloris"): loopback connections that trickle a request head byte by byte.

Each connection sends the first byte of a request head at once, then one more byte every
`interval` seconds, so the head never completes while the test runs. The trickle stops after
`max_seconds` at the latest, and every socket is closed on exit.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from types import TracebackType

HEAD = b"GET /healthz HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slowclient\r\n\r\n"


class SlowClients:
    def __init__(
        self,
        port: int,
        count: int = 300,
        interval: float = 5.0,
        max_seconds: float = 60.0,
    ) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.max_seconds = max_seconds
        self.opened_at = 0.0
        self.socks: list[socket.socket] = []
        # socket -> (seconds after opening when the server ended it, what it answered)
        self.ended: dict[socket.socket, tuple[float, bytes]] = {}
        self._sent = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> SlowClients:
        self.opened_at = time.monotonic()
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(HEAD[:1])
            sock.setblocking(False)
            self.socks.append(sock)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.socks:
            sock.close()

    def _trickle(self) -> None:
        deadline = self.opened_at + self.max_seconds
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            byte = HEAD[self._sent : self._sent + 1]
            self._sent += 1
            for sock in self.open_sockets():
                with contextlib.suppress(OSError):  # closed by the server: see poll()
                    sock.send(byte)

    def open_sockets(self) -> list[socket.socket]:
        return [s for s in self.socks if s not in self.ended]

    def poll(self) -> int:
        """Record the connections the server has ended; return how many are still open."""
        poller = select.poll()
        by_fd = {}
        for sock in self.open_sockets():
            poller.register(sock, select.POLLIN)
            by_fd[sock.fileno()] = sock
        for fd, _ in poller.poll(0):
            sock = by_fd[fd]
            try:
                answer = sock.recv(65536)
            except OSError:  # reset by the server
                answer = b""
            self.ended[sock] = (time.monotonic() - self.opened_at, answer)
        return len(self.socks) - len(self.ended)
