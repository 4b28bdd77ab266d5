"""Two instances sharing PostgreSQL and a local storage folder form one mirror: one upstream
fetch between them for a blob both are asked for at once. (Instances on S3, Redis and a
worker, killed mid-fill or under load: tests/test_cluster.py.)"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Upstreams, write_config
from tests.mirror_server import MirrorServer
from tests.support.net import get_together


def test_two_instances_fetch_once(tmp_path: Path, upstreams: Upstreams, database_url: str) -> None:
    config = write_config(tmp_path / "mirror.yml", upstreams)
    shared = {"DATABASE_URL": database_url, "MIRROR_STORAGE_DIR": str(tmp_path / "storage")}
    first = MirrorServer(tmp_path / "a", config, **shared)
    second = MirrorServer(tmp_path / "b", config, **shared)
    first.setup()
    first.start()
    second.start()
    try:
        layout = upstreams.seed("library/shared:1", layer_sizes=[3 * 1024 * 1024])
        digest = layout.layer_digests["linux/amd64"][0]
        data = layout.blob_bytes(digest)
        upstreams.hub.delay_per_chunk = 0.01
        upstreams.hub.reset()
        bodies = get_together([f"{s.url}/v2/shared/blobs/{digest}" for s in (first, second) * 8])
        assert all(body == data for body in bodies)
        assert upstreams.hub.count("GET", f"/blobs/{digest}") == 1
        # Either instance now serves it from the shared cache.
        first.wait_committed(f"/v2/shared/blobs/{digest}")
        for server in (first, second):
            response = httpx.get(f"{server.url}/v2/shared/blobs/{digest}", timeout=60)
            assert response.headers["X-Cache"] == "HIT" and response.content == data
    finally:
        first.stop()
        second.stop()
