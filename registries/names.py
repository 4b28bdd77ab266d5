"""Validation of repository names, tags and references, as the distribution spec defines them."""

from __future__ import annotations

import re

from mirror.digests import InvalidDigest, parse_digest

from .errors import RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
MAX_NAME = 255


def check_name(name: str) -> str:
    if len(name) > MAX_NAME or not NAME.match(name):
        raise RegistryError("NAME_INVALID", "invalid repository name", {"name": name[:300]})
    return name


def check_digest(value: str) -> str:
    try:
        parse_digest(value)
    except InvalidDigest as e:
        raise RegistryError("DIGEST_INVALID", str(e), {"digest": value[:300]}) from None
    return value


def is_digest(reference: str) -> bool:
    return ":" in reference


def check_tag(tag: str) -> str:
    if not TAG.match(tag):
        raise RegistryError("TAG_INVALID", "invalid tag", {"tag": tag[:300]})
    return tag


def check_reference(reference: str) -> str:
    """A tag or a digest. A reference that is neither cannot name a manifest: 404
    MANIFEST_UNKNOWN, as the OCI conformance suite expects (a bad digest stays a 400)."""
    if is_digest(reference):
        return check_digest(reference)
    if not TAG.match(reference):
        raise RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {"tag": reference[:300]})
    return reference
