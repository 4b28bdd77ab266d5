"""Push OCI artifacts to a real registry with the distribution API itself (skopeo copies
images, not a referrers index under the referrers tag schema)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(registry_url: str, name: str, data: bytes, media_type: str) -> dict[str, Any]:
    """Monolithic upload; return the blob's descriptor."""
    with httpx.Client(base_url=registry_url, timeout=30) as client:
        started = client.post(f"/v2/{name}/blobs/uploads/")
        started.raise_for_status()
        location = started.headers["Location"]
        separator = "&" if "?" in location else "?"
        client.put(
            f"{location}{separator}digest={_digest(data)}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        ).raise_for_status()
    return {"mediaType": media_type, "digest": _digest(data), "size": len(data)}


def push_manifest(
    registry_url: str, name: str, reference: str | None, document: dict[str, Any]
) -> dict[str, Any]:
    """PUT a manifest or index (by digest when `reference` is None); return its descriptor."""
    body = json.dumps(document).encode()
    media_type = document["mediaType"]
    response = httpx.put(
        f"{registry_url}/v2/{name}/manifests/{reference or _digest(body)}",
        content=body,
        headers={"Content-Type": media_type},
        timeout=30,
    )
    response.raise_for_status()
    return {"mediaType": media_type, "digest": _digest(body), "size": len(body)}


def push_referrer(
    registry_url: str, name: str, subject: dict[str, Any], artifact_type: str, payload: bytes
) -> dict[str, Any]:
    """Push an artifact manifest whose subject is `subject`; return its descriptor as a
    referrers list names it (artifactType and annotations included)."""
    config = push_blob(registry_url, name, b"{}", EMPTY_CONFIG)
    layer = push_blob(registry_url, name, payload, artifact_type)
    annotations = {"org.example.payload": payload.decode(errors="replace")[:40]}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": [layer],
        "subject": subject,
        "annotations": annotations,
    }
    descriptor = push_manifest(registry_url, name, None, manifest)
    return {**descriptor, "artifactType": artifact_type, "annotations": annotations}


def push_referrers_tag(
    registry_url: str, name: str, subject_digest: str, referrers: list[dict[str, Any]]
) -> None:
    """Maintain the referrers tag schema (`sha256-HEX`) as clients do for registries without
    the referrers API."""
    algorithm, encoded = subject_digest.split(":", 1)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": referrers}
    push_manifest(registry_url, name, f"{algorithm}-{encoded}", index)
