"""Nothing from an upstream is trusted (issue 7, points 2-4): manifests must be valid manifests
of the type they claim, HEAD answers never stand in for GET answers, a lying HEAD never drops
a cached tag, odd small answers are 502s (or STALE), and no answer is a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.oci_servers import (
    METADATA_CAP,
    OCI_INDEX,
    OCI_MANIFEST,
    Reply,
    StubRegistry,
    digest,
    oci_manifest,
)

pytest_plugins = ["tests.support.oci_fixtures"]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 1}


def get(mirror: MirrorServer, path: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{mirror.url}{path}", timeout=30, **kwargs)


def assert_oci_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["errors"][0]["code"] == code


def _json(**document: object) -> bytes:
    return json.dumps(document).encode()


_CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(b"c")}
BAD_MANIFESTS = {
    "html": (b"<html><script>alert(1)</script></html>", "text/html"),
    "manifest-served-as-html": (oci_manifest("h"), "text/html; charset=utf-8"),
    "served-as-text": (oci_manifest("t"), "text/plain"),
    "not-json": (b"\x00\x01 not json", OCI_MANIFEST),
    "json-array": (b"[]", OCI_MANIFEST),
    "schema1": (_json(schemaVersion=1, name="x", tag="1", fsLayers=[]), "application/json"),
    "version-as-string": (oci_manifest("v", schemaVersion="2"), OCI_MANIFEST),
    "declares-another-type": (oci_manifest("d", mediaType=DOCKER_MANIFEST), OCI_MANIFEST),
    "unknown-type": (_json(schemaVersion=2, mediaType="application/x-evil"), "application/json"),
    "index-without-manifests": (_json(schemaVersion=2, mediaType=OCI_INDEX), OCI_INDEX),
    "manifests-not-a-list": (
        _json(schemaVersion=2, mediaType=OCI_INDEX, manifests={"a": 1}),
        OCI_INDEX,
    ),
    "no-config": (_json(schemaVersion=2, mediaType=OCI_MANIFEST, layers=[]), OCI_MANIFEST),
    "layer-size-as-string": (
        _json(
            schemaVersion=2,
            mediaType=OCI_MANIFEST,
            config={**_CONFIG, "size": 1},
            layers=[{**LAYER, "size": "1", "digest": digest(b"l")}],
        ),
        OCI_MANIFEST,
    ),
    "layer-bad-digest": (
        _json(
            schemaVersion=2,
            mediaType=OCI_MANIFEST,
            config={**_CONFIG, "size": 1},
            layers=[{**LAYER, "digest": "sha256:../../etc"}],
        ),
        OCI_MANIFEST,
    ),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_an_invalid_manifest_is_a_502_and_not_cached(
    oci_mirror: MirrorServer, oci_stub: StubRegistry, case: str
) -> None:
    body, content_type = BAD_MANIFESTS[case]
    manifest_digest = oci_stub.manifest(f"bad/{case}", "1", body, content_type)
    for path in (f"bad/{case}/manifests/1", f"bad/{case}/manifests/{manifest_digest}"):
        oci_stub.reset()
        for _ in range(2):
            response = get(oci_mirror, f"/v2/stub.test/{path}")
            assert_oci_error(response, 502, "MANIFEST_INVALID")
        assert oci_stub.count("GET", path) == 2  # nothing was cached


def test_artifacts_and_plain_json_manifests_are_served(
    oci_mirror: MirrorServer, oci_stub: StubRegistry
) -> None:
    artifact = oci_manifest(
        "artifact",
        artifactType="application/vnd.example.sbom.v1",
        config={
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": digest(b"{}"),
            "size": 2,
        },
    )
    oci_stub.manifest("good/artifact", "1", artifact)
    response = get(oci_mirror, "/v2/stub.test/good/artifact/manifests/1")
    assert response.status_code == 200 and response.content == artifact
    assert response.headers["Content-Type"] == OCI_MANIFEST

    plain = oci_manifest("plain")
    oci_stub.manifest("good/plain", "1", plain, "application/json")
    response = get(oci_mirror, "/v2/stub.test/good/plain/manifests/1")
    assert response.status_code == 200 and response.content == plain
    assert response.headers["Content-Type"] == OCI_MANIFEST  # from the body's mediaType


def test_a_head_answer_is_never_a_get_answer(
    oci_mirror: MirrorServer, oci_stub: StubRegistry
) -> None:
    body = oci_manifest("lying-head")
    oci_stub.manifest("lyinghead", "1", body)
    path = "/v2/lyinghead/manifests/1"
    head_headers = {"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": digest(body)}
    oci_stub.replies[path].head = Reply(headers={**head_headers, "Content-Length": "5"})

    head = httpx.head(f"{oci_mirror.url}/v2/stub.test/lyinghead/manifests/1")
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest(body)
    response = get(oci_mirror, "/v2/stub.test/lyinghead/manifests/1")
    assert response.status_code == 200 and response.content == body
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["Content-Type"] == OCI_MANIFEST


def test_a_malformed_digest_from_an_upstream_head_serves_stale(
    oci_mirror: MirrorServer, oci_stub: StubRegistry
) -> None:
    body = oci_manifest("malformed-head")
    oci_stub.manifest("badhead", "1", body)
    url = f"{oci_mirror.url}/v2/stub.test/badhead/manifests/1"
    assert httpx.get(url).headers["X-Cache"] == "MISS"

    bad = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": "sha256:not-a-digest"}
    oci_stub.replies["/v2/badhead/manifests/1"].head = Reply(headers=bad)
    for method in ("HEAD", "GET"):
        stale = httpx.request(method, url)
        assert stale.status_code == 200 and stale.headers["X-Cache"] == "STALE"
        assert stale.headers["Docker-Content-Digest"] == digest(body)
    oci_stub.status = 503  # the tag is still cached: served stale
    stale = httpx.get(url)
    assert stale.status_code == 200 and stale.content == body
    assert stale.headers["X-Cache"] == "STALE"


NOT_TAG_LISTS = {
    "html": b"<html>tags</html>",
    "array": b'["a", "b"]',
    "numbers": b'{"name": "x", "tags": [1, 2]}',
    "string": b'{"name": "x", "tags": "latest"}',
    "over-the-cap": json.dumps({"tags": [f"t{i:08}" for i in range(METADATA_CAP // 8)]}).encode(),
}


@pytest.mark.parametrize("case", list(NOT_TAG_LISTS))
def test_a_bad_tags_list_is_a_502_or_stale(
    oci_mirror: MirrorServer, oci_stub: StubRegistry, case: str
) -> None:
    path = f"/v2/taglists/{case}/tags/list"
    oci_stub.replies[path] = Reply(body=NOT_TAG_LISTS[case])
    assert_oci_error(
        get(oci_mirror, f"/v2/stub.test/taglists/{case}/tags/list"), 502, "UNAVAILABLE"
    )

    good = f"/v2/goodlists/{case}/tags/list"
    oci_stub.replies[good] = Reply(body=b'{"name": "x", "tags": ["b", "a"]}')
    listing = get(oci_mirror, f"/v2/stub.test/goodlists/{case}/tags/list")
    assert listing.json()["tags"] == ["a", "b"]
    oci_stub.replies[good] = Reply(body=NOT_TAG_LISTS[case])
    stale = get(oci_mirror, f"/v2/stub.test/goodlists/{case}/tags/list")
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "STALE"
    assert stale.json()["tags"] == ["a", "b"]


def test_rate_limiting_upstream_gives_retry_after(
    oci_mirror: MirrorServer, oci_stub: StubRegistry
) -> None:
    oci_stub.fault_headers = {"Retry-After": "1"}
    oci_stub.status = 429
    response = get(oci_mirror, "/v2/stub2.test/limited/manifests/1")
    assert_oci_error(response, 429, "TOOMANYREQUESTS")
    assert response.headers["Retry-After"] == "1"


def test_tags_are_kept_per_accepted_media_types(
    oci_mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed(
        "library/pertype:1", platforms=[("linux", "amd64"), ("linux", "arm64")], v2s2=True
    )
    url = f"{oci_mirror.url}/v2/pertype/manifests/1"
    every = f"{DOCKER_LIST}, {DOCKER_MANIFEST}, {OCI_INDEX}, {OCI_MANIFEST}"
    for expected_cache in ("MISS", "HIT"):
        single = httpx.get(url, headers={"Accept": DOCKER_MANIFEST})
        assert single.headers["Content-Type"] == DOCKER_MANIFEST
        index = httpx.get(url, headers={"Accept": every})
        assert index.headers["Content-Type"] == DOCKER_LIST
        assert json.loads(index.content)["manifests"]
        assert (single.headers["X-Cache"], index.headers["X-Cache"]) == (expected_cache,) * 2
    head = httpx.head(url, headers={"Accept": every})
    assert head.headers["Content-Type"] == DOCKER_LIST
    assert head.headers["Docker-Content-Digest"] == index.headers["Docker-Content-Digest"]
    assert layout.digest  # pushed as a list


def test_x_cache_is_miss_on_the_request_that_filled(
    oci_mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("library/xcache:1")
    url = f"{oci_mirror.url}/v2/xcache/manifests/1"
    assert httpx.head(url).headers["X-Cache"] == "MISS"  # the tag is learned, not the body
    assert httpx.get(url).headers["X-Cache"] == "MISS"  # the body is filled now
    assert httpx.get(url).headers["X-Cache"] == "HIT"
    by_digest = f"{oci_mirror.url}/v2/xcache/manifests/{layout.digest}"
    assert httpx.get(by_digest).headers["X-Cache"] == "HIT"
