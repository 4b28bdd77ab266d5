"""Total deadlines for upstream answers, enforced at the socket.

httpx's timeouts are per operation: an upstream that trickles one byte every few seconds never
trips a 8 s read timeout, and a small answer can take minutes. Inside `deadline(seconds)`, every
socket operation of this thread (connect, TLS handshake, each write and read of the request
and response, headers included) gets at most the time left until the deadline, so the whole
exchange ends within it. The clamp lives in an httpcore network backend, the one place every
byte passes through; streamed bodies (blobs, zips) are read outside any deadline and keep the
per-read timeout.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import typing
from collections.abc import Iterator

import httpcore

_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every upstream socket operation of this thread to end within `seconds`."""
    previous = getattr(_local, "deadline", None)
    ends = time.monotonic() + seconds
    _local.deadline = ends if previous is None else min(previous, ends)
    try:
        yield
    finally:
        _local.deadline = previous


def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
    """The timeout for one socket operation: the caller's, cut to the time left."""
    ends = getattr(_local, "deadline", None)
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise error("total deadline exceeded")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.SyncBackend):
    """httpcore's socket backend with every operation clamped to the thread's deadline."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _Stream(super().connect_tcp(host, port, timeout, local_address, socket_options))
