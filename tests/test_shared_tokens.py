"""Instances of one mirror share what they learn of an upstream: a registry token one of them
got (through Redis, mirror/shared.py) and tag answers (through the database), so adding
replicas does not multiply token requests or tag lookups at the upstream."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Upstreams, write_config
from tests.support.cluster import Cluster, backing_services

ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"


def test_a_token_and_a_tag_one_instance_got_serve_the_others(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("acme/tool:1", layer_sizes=[4096])
    config = write_config(tmp_path / "mirror.yml", upstreams)
    ghcr = upstreams.ghcr  # Docker Hub-style bearer tokens, tag TTL 300 s
    with (
        backing_services(tmp_path) as backing,
        Cluster(tmp_path, config, backing, size=2, worker=False) as cluster,
    ):
        first, second = cluster.servers
        ghcr.reset()
        answer = httpx.get(
            f"{first.url}/v2/ghcr.io/acme/tool/manifests/1", headers={"Accept": ACCEPT}
        )
        assert answer.status_code == 200, answer.text
        assert ghcr.count("GET", "/token") == 1
        manifest_requests = ghcr.count("GET", "/manifests/") + ghcr.count("HEAD", "/manifests/")

        # Every process of the other instance: the tag from the database, no upstream request.
        for _ in range(6):
            again = httpx.get(
                f"{second.url}/v2/ghcr.io/acme/tool/manifests/1", headers={"Accept": ACCEPT}
            )
            assert again.status_code == 200 and again.content == answer.content
        assert ghcr.count("GET", "/manifests/") + ghcr.count("HEAD", "/manifests/") == (
            manifest_requests
        )

        # A blob the other instance fetches goes with the token the first one got.
        digest = layout.layer_digests["linux/amd64"][0]
        blob = httpx.get(f"{second.url}/v2/ghcr.io/acme/tool/blobs/{digest}")
        assert blob.status_code == 200 and blob.content == layout.blob_bytes(digest)
        assert ghcr.count("GET", "/token") == 1
