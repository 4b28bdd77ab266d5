"""Issue 7, point 7: /readyz reports storage that is not writable or below its free-space floor
(MIRROR_MIN_FREE_BYTES), with the reason."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.mirror_server import MirrorServer


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
