"""A threaded TCP relay that a test can cut and restore: an outage of PostgreSQL, Redis, S3 or
an upstream without stopping the real service behind it.

Point the mirror at the relay instead of the service::

    with TcpRelay("127.0.0.1", 5432) as relay:
        database_url = f"postgres://postgres@127.0.0.1:{relay.port}/db"
        ...  # start the mirror with database_url
        relay.pause()  # every relayed connection is closed; new ones are refused
        ...  # assert the mirror answers 503
        relay.resume()  # the same port accepts and relays again
        ...  # assert full service without a restart

What ``pause(mode)`` shows a client:

- ``"refuse"`` (default): the listening socket is closed, so a connect fails at once with
  ``ECONNREFUSED``, as when the service is stopped. ``resume()`` listens on the same port again.
- ``"reset"``: connections are accepted and closed at once with a TCP reset (a service that
  crashes on every connection, or a load balancer with no healthy backend).
- ``"hold"``: connections are accepted and nothing is answered until ``resume()``, when they are
  relayed (a network partition that swallows packets): this exercises the client's timeouts.

In every mode the connections open at ``pause()`` are closed (reset). Bytes are relayed
unchanged in both directions, one thread per connection; either side closing (or half-closing)
ends the connection for both, which suits request/response protocols (PostgreSQL, Redis, HTTP).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from typing import Literal

from tests.support.process import Service

__all__ = ["TcpRelay"]

PauseMode = Literal["refuse", "reset", "hold"]
_CHUNK = 64 * 1024


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (SO_LINGER 0) instead of an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class TcpRelay(Service):
    """Relay TCP connections from ``127.0.0.1:port`` to ``target_host:target_port``.

    ``port=0`` picks a free port (read it from ``.port`` after ``start()``). ``connections``
    counts the connections accepted so far (held and reset ones included). Thread-safe: any
    thread may call ``pause``/``resume``/``stop``.
    """

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.connections = 0
        self._mode: PauseMode | None = None
        self._lock = threading.Lock()
        self._resumed = threading.Condition(self._lock)
        self._open: set[socket.socket] = set()  # client and target sockets being relayed
        self._listener: socket.socket | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TcpRelay:
        self._listen()
        return self

    def stop(self) -> None:
        """Close the listener and every connection; held connections are dropped."""
        with self._lock:
            self._stopped = True
            self._resumed.notify_all()
        self._close_listener()
        self._close_open()

    @property
    def paused(self) -> bool:
        return self._mode is not None

    def pause(self, mode: PauseMode = "refuse") -> None:
        """Cut the service off: close every relayed connection; new ones per ``mode``."""
        with self._lock:
            if self._mode is not None:
                raise RuntimeError(f"already paused ({self._mode})")
            self._mode = mode
        if mode == "refuse":
            self._close_listener()
        self._close_open()

    def resume(self) -> None:
        """Relay again on the same port; connections held by a ``"hold"`` pause go through."""
        with self._lock:
            mode, self._mode = self._mode, None
            self._resumed.notify_all()
        if mode == "refuse":
            self._listen()

    # -- internals -------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(
            target=self._accept_loop, args=(listener,), name=f"tcprelay-{self.port}", daemon=True
        ).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _close_open(self) -> None:
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            # shutdown() wakes the relaying thread, which then closes both ends itself.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by pause("refuse") or stop()
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            while self._mode == "hold" and not self._stopped:
                self._resumed.wait()
            if self._mode == "reset" or self._stopped:
                _reset(client)
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        try:
            self._pump(client, upstream)
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            # An orderly close delivers what is still buffered for the other side (a reset
            # here cut the end of bodies the service sent just before closing); connections
            # cut by pause() were set to reset on close already.
            client.close()
            upstream.close()

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways until either side closes or fails."""
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    try:
                        data = source.recv(_CHUNK)
                        if not data:
                            return
                        peer[source].sendall(data)
                    except OSError:
                        return
