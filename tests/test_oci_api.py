"""The OCI pull API end to end: real upstream registry, the mirror under gunicorn, httpx."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
ALL_TYPES = ", ".join(
    [OCI_INDEX, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json", V2S2]
)


def get(mirror: MirrorServer, path: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{mirror.url}{path}", timeout=30, **kwargs)


def assert_oci_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["errors"][0]["code"] == code


def test_base_endpoint(mirror: MirrorServer) -> None:
    response = get(mirror, "/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_oci_manifest_by_tag_then_digest(mirror: MirrorServer, upstreams: Upstreams) -> None:
    layout = upstreams.seed("library/ocisingle:1")
    first = get(mirror, "/v2/ocisingle/manifests/1", headers={"Accept": ALL_TYPES})
    assert first.status_code == 200
    assert first.headers["X-Cache"] == "MISS"
    assert first.headers["Content-Type"] == OCI_MANIFEST
    assert first.headers["Docker-Content-Digest"] == layout.digest
    assert first.headers["Content-Length"] == str(len(first.content))
    assert "sha256:" + hashlib.sha256(first.content).hexdigest() == layout.digest

    upstreams.hub.reset()
    again = get(mirror, "/v2/library/ocisingle/manifests/1", headers={"Accept": ALL_TYPES})
    assert again.headers["X-Cache"] == "HIT" and again.content == first.content
    by_digest = get(mirror, f"/v2/ocisingle/manifests/{layout.digest}")
    assert by_digest.headers["X-Cache"] == "HIT"
    assert by_digest.content == first.content
    assert "immutable" in by_digest.headers["Cache-Control"]
    assert upstreams.hub.count("GET", "/manifests/") == 0

    head = httpx.head(f"{mirror.url}/v2/ocisingle/manifests/1", headers={"Accept": ALL_TYPES})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == first.headers["Content-Length"]
    assert head.headers["Docker-Content-Digest"] == layout.digest


def test_docker_schema2_manifest(mirror: MirrorServer, upstreams: Upstreams) -> None:
    upstreams.seed("library/dockerv2:1", v2s2=True)
    response = get(mirror, "/v2/dockerv2/manifests/1", headers={"Accept": V2S2})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == V2S2
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    assert response.headers["Docker-Content-Digest"] == digest
    assert json.loads(response.content)["mediaType"] == V2S2


def test_client_accept_list_is_forwarded(mirror: MirrorServer, upstreams: Upstreams) -> None:
    upstreams.seed("library/acceptfwd:1")
    accept = f"{OCI_MANIFEST}, {OCI_INDEX}"
    get(mirror, "/v2/acceptfwd/manifests/1", headers={"Accept": accept})
    sent = [h for m, p, h in upstreams.hub.requests_with_headers() if "acceptfwd/manifests/1" in p]
    assert sent and all(h.get("Accept") == accept for h in sent)


def test_multi_platform_index(mirror: MirrorServer, upstreams: Upstreams) -> None:
    layout = upstreams.seed("library/multi:1", platforms=[("linux", "amd64"), ("linux", "arm64")])
    index = get(mirror, "/v2/multi/manifests/1", headers={"Accept": ALL_TYPES})
    assert index.headers["Content-Type"] == OCI_INDEX
    assert index.headers["Docker-Content-Digest"] == layout.index_digest
    for entry in index.json()["manifests"]:
        child = get(mirror, f"/v2/multi/manifests/{entry['digest']}")
        assert child.status_code == 200
        assert child.headers["Content-Type"] == entry["mediaType"]
        assert len(child.content) == entry["size"]


def test_blob_get_head_and_ranges(mirror: MirrorServer, upstreams: Upstreams) -> None:
    layout = upstreams.seed("library/ranges:1", layer_sizes=[300_000])
    digest = layout.layer_digests["linux/amd64"][0]
    data = layout.blob_bytes(digest)
    path = f"/v2/ranges/blobs/{digest}"

    head = httpx.head(f"{mirror.url}{path}")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    assert head.headers["X-Cache"] == "MISS"

    cold = get(mirror, path, headers={"Range": "bytes=100-199"})  # a range on a cold blob
    assert cold.status_code == 206 and cold.content == data[100:200]
    assert cold.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    mirror.wait_committed(path)  # the whole blob is filled behind the range

    full = get(mirror, path)
    assert full.status_code == 200 and full.content == data
    assert full.headers["X-Cache"] == "HIT"
    assert full.headers["Docker-Content-Digest"] == digest
    assert full.headers["Content-Length"] == str(len(data))

    tail = get(mirror, path, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    open_ended = get(mirror, path, headers={"Range": f"bytes={len(data) - 5}-"})
    assert open_ended.content == data[-5:]
    assert_oci_error(
        get(mirror, path, headers={"Range": f"bytes={len(data)}-"}), 416, "RANGE_INVALID"
    )


def test_tags_list_and_catalog(mirror: MirrorServer, upstreams: Upstreams) -> None:
    for tag in ("a", "b", "c"):
        upstreams.seed(f"library/tagged:{tag}")
    listing = get(mirror, "/v2/tagged/tags/list")
    assert listing.json() == {"name": "tagged", "tags": ["a", "b", "c"]}
    page = get(mirror, "/v2/tagged/tags/list?n=2")
    assert page.json()["tags"] == ["a", "b"]
    assert "last=b" in page.headers["Link"]
    rest = get(mirror, "/v2/tagged/tags/list?n=2&last=b")
    assert rest.json()["tags"] == ["c"]

    get(mirror, "/v2/tagged/manifests/a")
    catalog = get(mirror, "/v2/_catalog").json()["repositories"]
    assert "tagged" in catalog and catalog == sorted(catalog)


BAD_PATHS = [
    ("/v2/x/../../etc/passwd/manifests/latest", 404, "UNSUPPORTED"),  # normalized: not /v2
    ("/v2/Upper/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/a%2F..%2F..%2Fb/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/a%00b/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/" + "a" * 300 + "/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/alpine/manifests/" + "t" * 200, 404, "MANIFEST_UNKNOWN"),
    ("/v2/alpine/manifests/.INVALID", 404, "MANIFEST_UNKNOWN"),  # the OCI conformance suite
    ("/v2/alpine/tags/list?last=.bad", 400, "TAG_INVALID"),
    ("/v2/alpine/manifests/bad%2Ftag", 404, "UNSUPPORTED"),
    ("/v2/alpine/manifests/sha256:1234", 400, "DIGEST_INVALID"),
    ("/v2/alpine/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
    ("/v2/alpine/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
    ("/v2/alpine/blobs/sha256:" + "a" * 65, 400, "DIGEST_INVALID"),
    ("/v2/alpine/blobs/sha256:..%2F..%2F" + "a" * 58, 404, "UNSUPPORTED"),
    ("/v2/alpine/tags/list?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
    ("/v2/alpine/tags/list?n=%C2%B2", 400, "PAGINATION_NUMBER_INVALID"),  # '²'.isdigit()
    ("/v2/_catalog?n=%C2%B2", 400, "PAGINATION_NUMBER_INVALID"),
    ("/v2/_catalog?n=0", 400, "PAGINATION_NUMBER_INVALID"),
    ("/v2/alpine/referrers/sha256:1234", 400, "DIGEST_INVALID"),
    ("/v2/alpine/manifests/latest?ns=evil.example", 404, "NAME_UNKNOWN"),
]


@pytest.mark.parametrize(("path", "status", "code"), BAD_PATHS)
def test_malformed_input_is_a_4xx_oci_error(
    mirror: MirrorServer, upstreams: Upstreams, path: str, status: int, code: str
) -> None:
    upstreams.hub.reset()
    with httpx.Client() as client:
        request = client.build_request("GET", mirror.url)
        request.url = request.url.copy_with(raw_path=path.encode())
        response = client.send(request)
    assert_oci_error(response, status, code)
    assert upstreams.hub.requests == []  # rejected before any upstream contact


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH", "DELETE"])
def test_writes_are_unsupported(mirror: MirrorServer, method: str) -> None:
    for path in ("/v2/alpine/manifests/latest", "/v2/alpine/blobs/uploads/"):
        response = httpx.request(method, f"{mirror.url}{path}", content=b"{}")
        assert_oci_error(response, 405, "UNSUPPORTED")


def test_unknown_manifest_and_blob(mirror: MirrorServer) -> None:
    assert_oci_error(get(mirror, "/v2/nosuch/manifests/1"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(get(mirror, "/v2/alpine/blobs/sha256:" + "0" * 64), 404, "BLOB_UNKNOWN")


def test_ns_parameter_selects_upstream(mirror: MirrorServer, upstreams: Upstreams) -> None:
    """containerd appends ?ns=HOST; the name is then the upstream's own."""
    layout = upstreams.seed("acme/nstool:1")
    upstreams.ghcr.reset()
    response = get(mirror, "/v2/acme/nstool/manifests/1?ns=ghcr.io")
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == layout.digest
    assert upstreams.ghcr.count("GET", "/v2/acme/nstool/manifests/1") >= 1
    digest = layout.layer_digests["linux/amd64"][0]
    blob = get(mirror, f"/v2/acme/nstool/blobs/{digest}?ns=ghcr.io")
    assert blob.content == layout.blob_bytes(digest)


def test_pulls_are_counted(mirror: MirrorServer, upstreams: Upstreams) -> None:
    upstreams.seed("library/counted:7")
    for _ in range(3):
        assert get(mirror, "/v2/counted/manifests/7").status_code == 200
    out = ""
    for _ in range(50):
        out = (
            mirror.manage(
                "shell",
                "-c",
                "from registries.models import Tag;"
                "t=Tag.objects.get(repository__name='library/counted', name='7');"
                "print(t.pull_count, t.repository.pull_count)",
            )
            .strip()
            .splitlines()[-1]
        )
        if out == "3 3":
            break
    assert out == "3 3"
