"""The OCI 1.1 referrers API (issue 7, point 8): proxied from an upstream that has it, built
from the referrers tag schema (`sha256-HEX`) on one that does not (the real distribution 2.8
here), kept for the tag TTL and served stale; signature tags pull through like any tag."""

from __future__ import annotations

import json

import httpx

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.oci_push import push_referrer, push_referrers_tag
from tests.support.oci_servers import OCI_INDEX, OCI_MANIFEST, Reply, StubRegistry, digest

pytest_plugins = ["tests.support.oci_fixtures"]

SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"


def get(mirror: MirrorServer, path: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{mirror.url}{path}", timeout=30, **kwargs)


def referrers(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"] == OCI_INDEX
    index = response.json()
    assert (index["schemaVersion"], index["mediaType"]) == (2, OCI_INDEX)
    return index["manifests"]


def test_referrers_from_the_fallback_tag_of_a_registry_without_the_api(
    oci_mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("library/signed:1")
    subject = {
        "mediaType": OCI_MANIFEST,
        "digest": layout.digest,
        "size": layout.blob_sizes[layout.digest],
    }
    registry = upstreams.registry.url
    sbom = push_referrer(registry, "library/signed", subject, SBOM, b"an sbom")
    signature = push_referrer(registry, "library/signed", subject, SIGNATURE, b"a signature")
    push_referrers_tag(registry, "library/signed", layout.digest, [sbom, signature])
    assert get(oci_mirror, "/v2/signed/manifests/1").status_code == 200

    upstreams.hub.reset()
    response = get(oci_mirror, f"/v2/signed/referrers/{layout.digest}")
    assert referrers(response) == [sbom, signature]
    assert response.headers["X-Cache"] == "MISS"
    assert "OCI-Filters-Applied" not in response.headers
    assert upstreams.hub.count("GET", f"/referrers/{layout.digest}") == 1  # 404: no API
    assert upstreams.hub.count("GET", "/manifests/sha256-") == 1

    filtered = get(oci_mirror, f"/v2/signed/referrers/{layout.digest}?artifactType={SBOM}")
    assert referrers(filtered) == [sbom]
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    none = get(oci_mirror, f"/v2/signed/referrers/{layout.digest}?artifactType=text/x-none")
    assert referrers(none) == []
    assert upstreams.hub.count("GET", "/manifests/sha256-") == 1  # kept for the tag TTL

    artifact = get(oci_mirror, f"/v2/signed/manifests/{sbom['digest']}")
    assert artifact.status_code == 200 and artifact.headers["Content-Type"] == OCI_MANIFEST
    assert json.loads(artifact.content)["subject"] == subject


def test_no_referrers_is_an_empty_index(oci_mirror: MirrorServer, upstreams: Upstreams) -> None:
    layout = upstreams.seed("library/unsigned:1")
    assert get(oci_mirror, "/v2/unsigned/manifests/1").status_code == 200
    assert referrers(get(oci_mirror, f"/v2/unsigned/referrers/{layout.digest}")) == []
    unknown = f"sha256:{'0' * 64}"
    assert referrers(get(oci_mirror, f"/v2/unsigned/referrers/{unknown}")) == []
    assert referrers(get(oci_mirror, f"/v2/never-pushed/referrers/{unknown}")) == []


def test_signature_tags_pull_through(oci_mirror: MirrorServer, upstreams: Upstreams) -> None:
    layout = upstreams.seed("library/cosigned:1")
    tag = f"sha256-{layout.digest.split(':')[1]}.sig"
    signature = upstreams.seed(f"library/cosigned:{tag}")
    response = get(oci_mirror, f"/v2/cosigned/manifests/{tag}")
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == signature.digest


def _index(*descriptors: dict) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    ).encode()


def _referrer(seed: str, artifact_type: str) -> dict:
    body = seed.encode()
    return {
        "mediaType": OCI_MANIFEST,
        "digest": digest(body),
        "size": 9,
        "artifactType": artifact_type,
    }


def test_referrers_api_of_the_upstream_is_proxied_and_served_stale(
    oci_mirror: MirrorServer, oci_stub: StubRegistry
) -> None:
    subject = digest(b"subject")
    path = f"/v2/refs/api/referrers/{subject}"
    first, second = _referrer("one", SBOM), _referrer("two", SIGNATURE)
    headers = {"Content-Type": OCI_INDEX}
    oci_stub.replies[path] = Reply(
        body=_index(first), headers={**headers, "Link": f'<{path}?page=2>; rel="next"'}
    )
    oci_stub.replies[f"{path}?page=2"] = Reply(body=_index(second), headers=headers)
    oci_stub.reset()

    url = f"/v2/stub.test/refs/api/referrers/{subject}"
    response = get(oci_mirror, url)
    assert referrers(response) == [first, second]
    assert oci_stub.count("GET", "/referrers/") == 2 and oci_stub.count("GET", "/manifests/") == 0
    filtered = get(oci_mirror, f"{url}?artifactType={SIGNATURE}")
    assert referrers(filtered) == [second]
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"

    oci_stub.status = 503
    stale = get(oci_mirror, url)
    assert referrers(stale) == [first, second] and stale.headers["X-Cache"] == "STALE"
    oci_stub.status = None
    oci_stub.replies[path] = Reply(body=b"<html>no</html>", headers={"Content-Type": "text/html"})
    assert get(oci_mirror, url).headers["X-Cache"] == "STALE"


def test_an_invalid_referrers_answer_is_a_502(
    oci_mirror: MirrorServer, oci_stub: StubRegistry
) -> None:
    subject = digest(b"html subject")
    oci_stub.replies[f"/v2/refs/html/referrers/{subject}"] = Reply(
        body=b"<html>no</html>", headers={"Content-Type": "text/html"}
    )
    response = get(oci_mirror, f"/v2/stub.test/refs/html/referrers/{subject}")
    assert response.status_code == 502 and response.headers["Content-Type"] == "application/json"
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
