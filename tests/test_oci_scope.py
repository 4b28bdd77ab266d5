"""The cache is scoped to what the upstream confirmed (issue 7, point 1): content cached from
one repository is served under another name only once the upstream says that name holds it,
and names it does not know leave no trace (no repository row, no `_catalog` entry)."""

from __future__ import annotations

import httpx

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.images import push

ALL_TYPES = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def get(mirror: MirrorServer, path: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{mirror.url}{path}", timeout=30, **kwargs)


def assert_unknown(response: httpx.Response, code: str) -> None:
    assert response.status_code == 404, response.text[:300]
    assert response.json()["errors"][0]["code"] == code


def repository_rows(mirror: MirrorServer, *names: str) -> int:
    out = mirror.manage(
        "shell",
        "-c",
        f"from registries.models import Repository;"
        f"print(Repository.objects.filter(name__in={list(names)!r}).count())",
    )
    return int(out.strip().splitlines()[-1])


def test_cached_content_is_served_only_under_confirmed_names(
    mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("library/scoped:1")
    layer = layout.layer_digests["linux/amd64"][0]
    data = layout.blob_bytes(layer)
    assert get(mirror, "/v2/scoped/manifests/1", headers={"Accept": ALL_TYPES}).is_success
    assert get(mirror, f"/v2/scoped/blobs/{layer}").content == data
    mirror.wait_committed(f"/v2/scoped/blobs/{layer}")

    # Another upstream that does not have it: asked, and 404.
    upstreams.corp.reset()
    assert_unknown(get(mirror, f"/v2/harbor.test/anything/blobs/{layer}"), "BLOB_UNKNOWN")
    assert upstreams.corp.count("HEAD", f"/v2/anything/blobs/{layer}") == 1
    assert_unknown(
        get(mirror, f"/v2/harbor.test/anything/manifests/{layout.digest}"), "MANIFEST_UNKNOWN"
    )
    # The same upstream, a name it does not have.
    assert_unknown(get(mirror, f"/v2/scope-nobody/blobs/{layer}"), "BLOB_UNKNOWN")
    head = httpx.head(f"{mirror.url}/v2/scope-nobody/blobs/{layer}")
    assert head.status_code == 404 and head.content == b""
    assert_unknown(get(mirror, f"/v2/scope-nobody/manifests/{layout.digest}"), "MANIFEST_UNKNOWN")

    catalog = get(mirror, "/v2/_catalog").json()["repositories"]
    assert "scoped" in catalog
    assert "scope-nobody" not in catalog and "harbor.test/anything" not in catalog
    assert repository_rows(mirror, "library/scope-nobody", "anything") == 0


def test_another_repository_that_has_it_is_confirmed_once(
    mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("library/scopea:1")
    layer = layout.layer_digests["linux/amd64"][0]
    assert get(mirror, "/v2/scopea/manifests/1", headers={"Accept": ALL_TYPES}).is_success
    assert get(mirror, f"/v2/scopea/blobs/{layer}").is_success
    mirror.wait_committed(f"/v2/scopea/blobs/{layer}")
    push(layout, f"{upstreams.registry.host}/library/scopeb:1")  # the same blobs

    upstreams.hub.reset()
    blob = get(mirror, f"/v2/scopeb/blobs/{layer}")
    assert blob.content == layout.blob_bytes(layer) and blob.headers["X-Cache"] == "HIT"
    manifest = get(mirror, f"/v2/scopeb/manifests/{layout.digest}")
    assert manifest.status_code == 200 and manifest.headers["X-Cache"] == "HIT"
    assert upstreams.hub.count("HEAD", "/v2/library/scopeb/") == 2
    assert upstreams.hub.count("GET", "/v2/library/scopeb/") == 0

    upstreams.hub.reset()
    assert get(mirror, f"/v2/scopeb/blobs/{layer}").headers["X-Cache"] == "HIT"
    assert get(mirror, f"/v2/scopeb/manifests/{layout.digest}").headers["X-Cache"] == "HIT"
    assert upstreams.hub.requests == []
    assert "scopeb" in get(mirror, "/v2/_catalog").json()["repositories"]


def test_a_served_index_links_its_children_and_their_layers(
    mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed(
        "library/scopeidx:1", platforms=[("linux", "amd64"), ("linux", "arm64")]
    )
    index = get(mirror, "/v2/scopeidx/manifests/1", headers={"Accept": ALL_TYPES})
    assert index.status_code == 200
    for platform, child in layout.manifest_digests.items():
        assert get(mirror, f"/v2/scopeidx/manifests/{child}").status_code == 200
        layer = layout.layer_digests[platform][0]
        assert get(mirror, f"/v2/scopeidx/blobs/{layer}").status_code == 200
    # Everything came with the index and its children: no upstream HEAD to confirm any of it.
    assert upstreams.hub.count("HEAD", "/v2/library/scopeidx/") == 0
