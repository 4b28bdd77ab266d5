"""Which gunicorn worker model keeps slow clients from starving the others?

`python -m bench.worker_model` starts the mirror twice, with `sync` and with `gthread`
workers (2 processes each, as `make run` on 2 cores), warms a 64 MiB blob, opens 16 clients
that read it slowly (1 MiB/s each, a small receive buffer, as a distant CI runner would), and
meanwhile times 20 warm manifest requests from a fast client. Prints the latencies per model.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import write_config
from tests.mirror_server import MirrorServer
from tests.support.faultproxy import FaultProxy
from tests.support.images import build_layout, push
from tests.support.registry import Registry

from .peers import MIRROR_ENV

SLOW_CLIENTS = 16
SLOW_RATE = 1024 * 1024  # bytes per second per slow client
PROBES = 20


def _slow_reader(host: str, port: int, path: str, stop: threading.Event) -> None:
    """Download `path`, reading at SLOW_RATE, until the whole body is read or `stop`."""
    with contextlib.suppress(OSError), socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        while not stop.is_set():
            if not sock.recv(SLOW_RATE // 10):
                return
            time.sleep(0.1)


def _probe(url: str) -> tuple[list[float], int]:
    """Latencies (s) of warm manifest GETs, and how many timed out (10 s)."""
    latencies, timeouts = [], 0
    for _ in range(PROBES):
        started = time.monotonic()
        try:
            httpx.get(url, timeout=10).raise_for_status()
            latencies.append(time.monotonic() - started)
        except httpx.TimeoutException:
            timeouts += 1
        time.sleep(0.05)
    return latencies, timeouts


def measure(worker_class: str, root: Path, config: Path, name: str, digest: str) -> str:
    env = {**MIRROR_ENV, "GUNICORN_WORKER_CLASS": worker_class}
    if worker_class == "sync":
        env["GUNICORN_THREADS"] = "1"  # gunicorn runs gthread whenever threads > 1
    mirror = MirrorServer(root / worker_class, config, **env)
    mirror.setup()
    mirror.start()
    stop = threading.Event()
    try:
        blob = f"/v2/{name}/blobs/{digest}"
        manifest = f"{mirror.url}/v2/{name}/manifests/1"
        httpx.get(f"{mirror.url}{blob}", timeout=60)  # warm
        httpx.get(manifest, timeout=10)
        readers = [
            threading.Thread(target=_slow_reader, args=("127.0.0.1", mirror.port, blob, stop))
            for _ in range(SLOW_CLIENTS)
        ]
        for reader in readers:
            reader.start()
        time.sleep(1)
        latencies, timeouts = _probe(manifest)
    finally:
        stop.set()
        mirror.stop()
    median = f"{statistics.median(latencies) * 1000:.1f} ms" if latencies else "-"
    worst = f"{max(latencies) * 1000:.0f} ms" if latencies else "-"
    return f"{worker_class:8} median {median:>9}, worst {worst:>7}, timed out {timeouts}/{PROBES}"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="entrepot-workers-") as tmp:
        root = Path(tmp)
        with Registry(workdir=root / "registry") as registry:
            layout = build_layout(root / "layout", layer_sizes=[64 * 1024 * 1024])
            push(layout, f"{registry.host}/library/slow:1")
            digest = layout.layer_digests["linux/amd64"][0]
            with FaultProxy(registry.url) as proxy:
                hub = type("Up", (), {"hub": proxy, "ghcr": proxy, "corp": proxy})
                config = write_config(root / "mirror.yml", hub)  # type: ignore[arg-type]
                print(
                    f"{SLOW_CLIENTS} clients reading a 64 MiB blob at 1 MiB/s; "
                    f"{PROBES} warm manifest GETs meanwhile:"
                )
                for worker_class in ("sync", "gthread"):
                    print(measure(worker_class, root, config, "slow", digest), flush=True)


if __name__ == "__main__":
    main()
