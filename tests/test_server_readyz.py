"""Issue 7, point 7: /readyz reports storage that is not writable or below its free-space floor
(MIRROR_MIN_FREE_BYTES), with the reason. Issue 10: and a database or broker out of reach, or
migrations not applied."""

from __future__ import annotations

import re
import shutil
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.mirror_server import MirrorServer
from tests.support.tcprelay import TcpRelay
from tests.support.worker import redis_url


def _server(tmp_path_factory: pytest.TempPathFactory, **env: str) -> MirrorServer:
    server = MirrorServer(tmp_path_factory.mktemp("readyz") / "var", None, **env)
    server.setup()
    return server.start()


def test_storage_not_writable(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Running as root, permissions stop nothing: the storage folder is replaced by a file."""
    server = _server(tmp_path_factory, MIRROR_MIN_FREE_BYTES="0")
    storage = server.data_dir / "storage"
    aside = server.data_dir / "storage-aside"
    try:
        assert httpx.get(f"{server.url}/readyz").json() == {"status": "ok"}
        storage.rename(aside)
        storage.write_bytes(b"not a folder")
        # Several times: each worker process answers some (one may set storage up only now).
        for _ in range(6):
            ready = httpx.get(f"{server.url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["reason"].startswith("storage not writable")
        storage.unlink()
        aside.rename(storage)
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.stop()


def test_storage_below_free_space_floor(tmp_path_factory: pytest.TempPathFactory) -> None:
    free = shutil.disk_usage(tmp_path_factory.getbasetemp()).free
    server = _server(tmp_path_factory, MIRROR_MIN_FREE_BYTES=str(free * 4))
    try:
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503
        assert "free-space floor" in ready.json()["reason"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, not ready
    finally:
        server.stop()


def test_not_ready_while_postgresql_or_redis_is_unreachable(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> None:
    """Issue 10: PostgreSQL and Redis reached through relays a test cuts and restores; /readyz
    says which is gone, then recovers, with no restart. Redis is cut with a "hold" (packets
    swallowed) to show that the probe is bounded by its timeout, not hung."""
    database = urlsplit(database_url)
    redis = urlsplit(redis_url())
    with (
        TcpRelay(database.hostname or "", database.port or 5432) as pg_relay,
        TcpRelay(redis.hostname or "", redis.port or 6379) as redis_relay,
    ):
        server = _server(
            tmp_path_factory,
            MIRROR_MIN_FREE_BYTES="0",
            DATABASE_URL=database._replace(netloc=f"postgres@127.0.0.1:{pg_relay.port}").geturl(),
            REDIS_URL=redis._replace(netloc=f"127.0.0.1:{redis_relay.port}").geturl(),
        )
        try:
            assert httpx.get(f"{server.url}/readyz").json() == {"status": "ok"}
            pg_relay.pause()
            for _ in range(4):  # each worker process answers some
                ready = httpx.get(f"{server.url}/readyz", timeout=15)
                assert ready.status_code == 503
                assert ready.json()["reason"] == "database: OperationalError"
            assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, not ready
            pg_relay.resume()
            _wait_ready(server)

            redis_relay.pause("hold")
            for _ in range(2):
                ready = httpx.get(f"{server.url}/readyz", timeout=15)
                assert ready.status_code == 503
                assert ready.json()["reason"].startswith("broker: ")
            redis_relay.resume()
            _wait_ready(server)
        finally:
            server.stop()


def test_not_ready_while_migrations_are_pending(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("readyz") / "var"
    server = MirrorServer(data, None, MIRROR_MIN_FREE_BYTES="0")
    data.mkdir(parents=True)
    # A release whose migrations Job has not run yet (the database of the one before).
    server.manage("migrate", "mirror", "0002")
    server.start()
    try:
        for _ in range(4):  # each worker process answers some
            ready = httpx.get(f"{server.url}/readyz")
            assert ready.status_code == 503
            assert re.fullmatch(r"database: \d+ migrations not applied", ready.json()["reason"])
        server.manage("migrate", "--noinput")
        _wait_ready(server)
    finally:
        server.stop()


def _wait_ready(server: MirrorServer, timeout: float = 10) -> None:
    """Ready again within `timeout` (each worker drops its broken connection on first use)."""
    deadline = time.monotonic() + timeout
    while (ready := httpx.get(f"{server.url}/readyz", timeout=15)).status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready again: {ready.text}")
        time.sleep(0.2)
