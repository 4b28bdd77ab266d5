"""Manifest formats: which media types the mirror serves, what a valid manifest of each looks
like, what it references, and how a client's `Accept` list is keyed.

Nothing from an upstream is served or cached unless it parses here: a manifest body must be
JSON of the media type it claims (OCI image manifest or index, Docker schema 2 manifest or
list; OCI artifacts are OCI image manifests with an `artifactType`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mirror.digests import InvalidDigest, parse_digest
from mirror.errors import UpstreamInvalid

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
# Content types that claim nothing more than "JSON": the body's `mediaType` (or, for OCI
# manifests written without one, its shape) then says what it is.
_GENERIC_TYPES = ("", "application/json")
MAX_MANIFEST = 4 * 1024 * 1024  # distribution's limit

BLOB = "blob"
MANIFEST = "manifest"


@dataclass(frozen=True)
class Parsed:
    """A manifest that passed validation."""

    media_type: str
    references: tuple[tuple[str, str], ...]  # (digest, BLOB | MANIFEST) it needs in its repo
    descriptors: tuple[dict[str, Any], ...]  # an index's `manifests`


def media_type_of(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def accept_key(accept: list[str]) -> str:
    """The part of a client's `Accept` list that decides which manifest an upstream answers
    for a tag: the manifest types it names (sorted), `*/*` if present, or `*` when it names
    none (the mirror then asks for every type)."""
    types = sorted({t for t in accept if t in MANIFEST_TYPES})
    if not types:
        return "*"
    if "*/*" in accept:
        types.append("*/*")
    return ",".join(types)


def upstream_accept(accept: list[str]) -> str:
    """The `Accept` header sent upstream: the client's own list; a client naming no manifest
    type at all (`*/*`, or nothing) accepts any, and registries answer such a list with legacy
    schema 1 or 404, so every type is named first."""
    if not any(media_type in MANIFEST_TYPES for media_type in accept):
        accept = [*MANIFEST_TYPES, *accept]
    return ", ".join(accept)


def _fail(message: str) -> UpstreamInvalid:
    return UpstreamInvalid(f"upstream manifest invalid: {message}")


def _descriptor(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{where} is not a descriptor")
    if not isinstance(value.get("mediaType"), str):
        raise _fail(f"{where} has no mediaType")
    digest = value.get("digest")
    try:
        parse_digest(digest if isinstance(digest, str) else "")
    except InvalidDigest:
        raise _fail(f"{where} has a bad digest") from None
    size = value.get("size")
    if type(size) is not int or size < 0:
        raise _fail(f"{where} has a bad size")
    for field in ("annotations", "platform"):
        if field in value and not isinstance(value[field], dict):
            raise _fail(f"{where}.{field} is not an object")
    if "artifactType" in value and not isinstance(value["artifactType"], str):
        raise _fail(f"{where}.artifactType is not a string")
    return value


def _descriptors(body: dict[str, Any], field: str) -> list[dict[str, Any]]:
    values = body.get(field)
    if not isinstance(values, list):
        raise _fail(f"`{field}` is not a list")
    return [_descriptor(v, f"{field}[{i}]") for i, v in enumerate(values)]


def _claimed_type(body: dict[str, Any], content_type: str) -> str:
    claimed = media_type_of(content_type)
    declared = body.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _fail("mediaType is not a string")
    if claimed in MANIFEST_TYPES:
        if declared is not None and declared != claimed:
            raise _fail(f"served as {claimed} but declares {declared[:100]}")
        return claimed
    if claimed not in _GENERIC_TYPES:
        raise _fail(f"served as {claimed[:100]!r}, not a manifest type")
    if declared is not None:
        if declared not in MANIFEST_TYPES:
            raise _fail(f"declares {declared[:100]!r}, not a manifest type")
        return declared
    # OCI allows leaving mediaType out; Docker schema 2 does not.
    return OCI_INDEX if "manifests" in body else OCI_MANIFEST


def parse_manifest(body: bytes, content_type: str) -> Parsed:
    """Validate a manifest as served (`content_type` is the upstream's Content-Type, or the
    stored media type). Raises UpstreamInvalid."""
    try:
        document = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        raise _fail("not JSON") from None
    if not isinstance(document, dict):
        raise _fail("not a JSON object")
    version = document.get("schemaVersion")
    if type(version) is not int or version != 2:
        raise _fail("schemaVersion is not 2")
    media_type = _claimed_type(document, content_type)
    if "artifactType" in document and not isinstance(document["artifactType"], str):
        raise _fail("artifactType is not a string")
    if "subject" in document:
        _descriptor(document["subject"], "subject")
    if media_type in INDEX_TYPES:
        children = _descriptors(document, "manifests")
        refs = tuple((d["digest"], MANIFEST) for d in children)
        return Parsed(media_type, refs, tuple(children))
    config = _descriptor(document.get("config"), "config")
    layers = _descriptors(document, "layers")
    refs = tuple((d["digest"], BLOB) for d in (config, *layers))
    return Parsed(media_type, refs, ())
