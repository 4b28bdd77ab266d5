"""Plain HTTP clients for the benchmark (http.client: no proxies, no extra dependencies)."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024
OCI_ACCEPT = {
    "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
}


@dataclass
class Download:
    """One response whose body was streamed through sha256 and discarded."""

    status: int
    headers: dict[str, str]
    size: int
    sha256: str
    seconds: float
    headers_after: float = 0.0  # seconds until the status line and headers arrived
    last_gap: float = 0.0  # seconds the final read waited (a held-back tail shows here)

    def matches(self, digest: str) -> bool:
        return self.status == 200 and f"sha256:{self.sha256}" == digest


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return http.client.HTTPConnection(parts.netloc, timeout=timeout), path or "/"


def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 600.0,
    barrier: threading.Barrier | None = None,
) -> Download:
    """Send one request and hash the body as it arrives (constant memory)."""
    conn, path = _connection(url, timeout)
    try:
        conn.connect()
        if barrier is not None:
            barrier.wait()
        start = time.monotonic()
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        headers_after = time.monotonic() - start
        digest = hashlib.sha256()
        size = 0
        last = prev = time.monotonic()
        while data := resp.read1(CHUNK):
            prev, last = last, time.monotonic()
            digest.update(data)
            size += len(data)
        return Download(
            status=resp.status,
            headers={k.lower(): v for k, v in resp.getheaders()},
            size=size,
            sha256=digest.hexdigest(),
            seconds=time.monotonic() - start,
            headers_after=headers_after,
            last_gap=last - prev,
        )
    finally:
        conn.close()


def concurrent_fetch(url: str, n: int, timeout: float = 600.0) -> tuple[list[Download], float]:
    """`n` threads GET `url` at once (released by a barrier); (results, wall seconds)."""
    barrier = threading.Barrier(n + 1)
    results: list[Download | BaseException | None] = [None] * n

    def worker(i: int) -> None:
        try:
            results[i] = fetch(url, timeout=timeout, barrier=barrier)
        except BaseException as e:
            results[i] = e
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    for t in threads:
        t.join(timeout)
    wall = time.monotonic() - start
    errors = [r for r in results if not isinstance(r, Download)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} concurrent GETs of {url} failed: {errors[0]!r}")
    return [r for r in results if isinstance(r, Download)], wall


def skopeo_pull(ref: str, out: Path, timeout: float = 600.0) -> float:
    """`skopeo copy docker://REF dir:OUT`; seconds taken. The output folder is removed."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        "skopeo",
        "copy",
        "--quiet",
        "--insecure-policy",
        "--src-tls-verify=false",
        f"docker://{ref}",
        f"dir:{out}",
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.monotonic() - start
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo copy of {ref} failed: {proc.stderr.strip()}")
    return seconds
