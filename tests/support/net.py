"""Small networking helpers for tests: free ports, waiting for HTTP servers, and clients
that ask at the same moment."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import httpx

__all__ = ["free_port", "get_together", "wait_http"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0) -> int:
    """Poll ``url`` until it gives any HTTP answer and return its status code.

    Connection errors are retried; any HTTP status (including 4xx/5xx) counts as an answer.
    Raises ``TimeoutError`` when nothing answered within ``timeout`` seconds.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy env
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            with opener.open(url, timeout=2.0) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no HTTP answer from {url} within {timeout:.1f}s (last error: {last_error!r})"
            )
        time.sleep(0.05)


def get_together(urls: list[str], timeout: float = 60.0) -> list[bytes]:
    """GET every URL at once (threads released together by a barrier); return the bodies."""
    barrier = threading.Barrier(len(urls))

    def get(url: str) -> bytes:
        barrier.wait()
        return httpx.get(url, timeout=timeout).content

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(get, urls))
