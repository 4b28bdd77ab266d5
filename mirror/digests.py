"""Digest parsing and streaming verification (`sha256:<hex>`, `sha512:<hex>`)."""

from __future__ import annotations

import hashlib
import re

from .errors import DigestMismatch

# The OCI digest grammar; only the algorithms below are accepted for use.
DIGEST_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")


class InvalidDigest(ValueError):
    """Not a digest, or one of an algorithm we do not verify."""


def parse_digest(value: str) -> tuple[str, str]:
    """Split and validate `alg:hex`; raise InvalidDigest."""
    if len(value) > 256 or not DIGEST_GRAMMAR.match(value):
        raise InvalidDigest(f"malformed digest {value[:80]!r}")
    algorithm, hexpart = value.split(":", 1)
    if algorithm not in ALGORITHMS:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
    if len(hexpart) != ALGORITHMS[algorithm] or not _HEX.match(hexpart):
        raise InvalidDigest(f"malformed {algorithm} digest")
    return algorithm, hexpart


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def storage_key(digest: str) -> str:
    """The content-addressed storage key of a digest: `blobs/sha256/ab/abcd...`."""
    algorithm, hexpart = parse_digest(digest)
    return f"blobs/{algorithm}/{hexpart[:2]}/{hexpart}"


class DigestVerifier:
    """Hashes a stream; `verify` raises DigestMismatch unless it matches `digest`."""

    def __init__(self, digest: str) -> None:
        algorithm, _ = parse_digest(digest)
        self.digest = digest
        self._hash = hashlib.new(algorithm)

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def verify(self, size: int, path: object = None) -> None:
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatch(f"expected {self.digest}, got {actual} ({size} bytes)")
