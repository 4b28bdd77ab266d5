"""Fetch once (issue 7, point 6): concurrent misses for one manifest, tag or tags list cause
one upstream request, across the mirror's two worker processes too."""

from __future__ import annotations

import json

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.net import get_together

pytest_plugins = ["tests.support.oci_fixtures"]


def test_ten_new_tags_asked_by_ten_clients_each_are_fetched_once(
    oci_mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layouts = [upstreams.seed(f"library/oncetags:t{i}") for i in range(10)]
    upstreams.hub.reset()
    urls = [f"{oci_mirror.url}/v2/oncetags/manifests/t{i}" for i in range(10)] * 10
    bodies = get_together(urls)
    assert [json.loads(body)["schemaVersion"] for body in bodies] == [2] * 100
    assert upstreams.hub.count("GET", "/manifests/") == 10

    upstreams.hub.reset()
    listing = get_together([f"{oci_mirror.url}/v2/oncetags/tags/list"] * 20)
    assert {body for body in listing} == {
        json.dumps({"name": "oncetags", "tags": [f"t{i}" for i in range(10)]}).encode()
    }
    assert upstreams.hub.count("GET", "/tags/list") == 1
    assert len({layout.digest for layout in layouts}) == 10


def test_a_manifest_asked_by_digest_by_many_clients_is_fetched_once(
    oci_mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("library/oncedigest:1")
    upstreams.hub.reset()
    bodies = get_together([f"{oci_mirror.url}/v2/oncedigest/manifests/{layout.digest}"] * 20)
    assert len(set(bodies)) == 1 and json.loads(bodies[0])["schemaVersion"] == 2
    assert upstreams.hub.count("GET", f"/manifests/{layout.digest}") == 1
