"""The mirror on S3 storage (a real S3 API server, moto, on loopback): fills stream into a
multipart upload, warm blobs are served from S3 or by a 307 to a presigned URL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import Upstreams, write_config
from tests.mirror_server import MirrorServer
from tests.support.faultproxy import FaultProxy
from tests.support.net import free_port
from tests.support.s3 import bucket_env

BUCKET = "entrepot-test"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = bucket_env(f"http://127.0.0.1:{port}", BUCKET)
    yield env
    server.stop()


@pytest.mark.parametrize("redirect", ["0", "1"])
def test_blobs_through_s3(
    tmp_path: Path, upstreams: Upstreams, s3_env: dict[str, str], redirect: str
) -> None:
    server = MirrorServer(
        tmp_path / "var",
        write_config(tmp_path / "mirror.yml", upstreams),
        MIRROR_S3_REDIRECT=redirect,
        **s3_env,
    )
    server.setup()
    server.start()
    try:
        layout = upstreams.seed(f"library/ons3{redirect}:1", layer_sizes=[12 * 1024 * 1024])
        digest = layout.layer_digests["linux/amd64"][0]
        data = layout.blob_bytes(digest)
        url = f"{server.url}/v2/ons3{redirect}/blobs/{digest}"
        cold = httpx.get(url, timeout=60)
        assert cold.headers["X-Cache"] == "MISS" and cold.content == data
        server.wait_committed(f"/v2/ons3{redirect}/blobs/{digest}")
        upstreams.hub.reset()
        warm = httpx.get(url, timeout=60, follow_redirects=True)
        assert warm.content == data
        assert upstreams.hub.count("GET", "/blobs/") == 0
        if redirect == "1":
            assert warm.history and warm.history[0].status_code == 307
            assert warm.history[0].headers["Location"].startswith(s3_env["AWS_S3_ENDPOINT_URL"])
        else:
            assert warm.headers["X-Cache"] == "HIT" and not warm.history
            part = httpx.get(url, headers={"Range": "bytes=9000000-9000099"}, timeout=60)
            assert part.status_code == 206 and part.content == data[9000000:9000100]
        assert hashlib.sha256(warm.content).hexdigest() == digest.split(":")[1]
        assert list((tmp_path / "var/spool").iterdir()) == []  # the fill's spool is gone
    finally:
        server.stop()


def test_a_slow_store_holds_back_neither_the_stream_nor_the_client(
    tmp_path: Path, upstreams: Upstreams, s3_env: dict[str, str]
) -> None:
    """Parts go to S3 from the fill's spool behind the stream: with every S3 request held
    0.5 s (a 24 MiB blob takes three parts), the client has the whole verified body while
    parts are still on their way; the commit follows them."""
    with FaultProxy(s3_env["AWS_S3_ENDPOINT_URL"]) as slow:
        server = MirrorServer(
            tmp_path / "var",
            write_config(tmp_path / "mirror.yml", upstreams),
            **{**s3_env, "AWS_S3_ENDPOINT_URL": slow.url},
        )
        server.setup()
        server.start()
        try:
            layout = upstreams.seed("library/slows3:1", layer_sizes=[24 * 1024 * 1024])
            digest = layout.layer_digests["linux/amd64"][0]
            slow.requests.clear()
            slow.delay_per_request = 0.5
            cold = httpx.get(f"{server.url}/v2/slows3/blobs/{digest}", timeout=60)
            assert cold.status_code == 200
            assert hashlib.sha256(cold.content).hexdigest() == digest.split(":")[1]
            assert slow.count("PUT", "partNumber=") < 3, slow.requests
            slow.delay_per_request = 0
            server.wait_committed(f"/v2/slows3/blobs/{digest}")
            # Parts of at least 8 MiB (mirror/storage/s3.py), cut where the spool's reads end:
            # three, or four when the first three came to exactly 8 MiB each and the blob's
            # last bytes (the layer is a little over 24 MiB) went on their own. botocore may
            # send a part again after a timeout: the same number.
            parts = sorted(
                {
                    int(p.split("partNumber=")[1].split("&")[0])
                    for m, p in slow.requests
                    if m == "PUT" and "partNumber=" in p
                }
            )
            assert parts in ([1, 2, 3], [1, 2, 3, 4]), slow.requests
            assert slow.count("POST", "uploadId=") == 1  # CompleteMultipartUpload
        finally:
            server.stop()
