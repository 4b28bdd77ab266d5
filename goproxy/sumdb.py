"""The checksum database: proxying its endpoints, and checking modules against it.

A lookup answer is `ID\\nRECORD\\n\\nSIGNED-TREE-NOTE`. We accept its hashes only when the
note is signed by the configured key and the record is proven (from tiles) to be leaf ID of
the tree the note signs.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mirror.documents import get_document
from mirror.errors import UpstreamNotFound
from mirror.http import client_for
from mirror.upstreams import UpstreamInfo, upstreams_of_kind

from . import tlog
from .paths import escape

# How long answers that can change are reused: the signed tree head and partial tiles.
LATEST_TTL = 60
TILE_PATH = re.compile(r"^tile/8/(?:data|[0-9]+)/(?:x[0-9]{3}/)*[0-9]{3}(?:\.p/[0-9]{1,3})?$")
STALE_MAX_AGE = 7 * 24 * 3600
_ALG_ED25519 = 1


class SumdbError(Exception):
    """The checksum database's answer failed verification."""


class NotInSumdb(Exception):
    """The checksum database does not know this module version."""


@dataclass(frozen=True)
class VerifierKey:
    name: str
    key_hash: int
    public: Ed25519PublicKey

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parse `name+hash+base64key`, as golang.org/x/mod/sumdb/note does."""
        try:
            name, hash_hex, encoded = vkey.split("+", 2)  # base64 may contain "+"
            raw = base64.b64decode(encoded, validate=True)
            key_hash = int(hash_hex, 16)
        except ValueError as e:
            raise SumdbError(f"malformed verifier key: {e}") from None
        if len(raw) != 33 or raw[0] != _ALG_ED25519:
            raise SumdbError("verifier key is not an Ed25519 key")
        if int.from_bytes(hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]) != key_hash:
            raise SumdbError("verifier key hash does not match")
        return cls(name, key_hash, Ed25519PublicKey.from_public_bytes(raw[1:]))


def verify_note(note: bytes, key: VerifierKey) -> bytes:
    """The note's text if one of its signatures is by `key`; raise SumdbError otherwise."""
    split = note.rfind(b"\n\n")
    if split < 0:
        raise SumdbError("malformed note")
    text, signatures = note[: split + 1], note[split + 2 :]
    for line in signatures.decode("utf-8", "replace").splitlines():
        if not line.startswith("\u2014 "):
            continue
        name, _, encoded = line[2:].rpartition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if name != key.name or len(raw) < 5 or int.from_bytes(raw[:4]) != key.key_hash:
            continue
        try:
            key.public.verify(raw[4:], text)
        except InvalidSignature:
            raise SumdbError("tree head signature is invalid") from None
        return text
    raise SumdbError("tree head is not signed by the configured key")


def database(name: str) -> UpstreamInfo | None:
    """The configured checksum database called `name`."""
    for upstream in upstreams_of_kind("gosumdb"):
        if upstream.sumdb == name:
            return upstream
    return None


def default_database() -> UpstreamInfo | None:
    databases = upstreams_of_kind("gosumdb")
    return databases[0] if databases else None


def fetch(db: UpstreamInfo, path: str) -> tuple[bytes, str]:
    """A checksum-database answer by its path (`lookup/...`, `tile/...`, `latest`), cached:
    full tiles forever, partial ones and the tree head briefly, lookups for a day."""
    immutable = path.startswith("tile/") and ".p/" not in path

    def get() -> bytes:
        return client_for(db).send("GET", f"/{path}").content

    ttl = 10 * 365 * 86400 if immutable else LATEST_TTL if path == "latest" else 86400
    if path.startswith("tile/") and not immutable:
        ttl = 3600  # a partial tile of width W never changes either; keep it a while
    document = get_document(f"sumdb:{db.name}", path, get, ttl=ttl, stale_max_age=STALE_MAX_AGE)
    return document.body, document.cache


@dataclass(frozen=True)
class Sums:
    zip: str  # h1:...
    mod: str


def lookup(db: UpstreamInfo, module: str, version: str) -> Sums:
    """The verified hashes of module@version.

    Raises:
        NotInSumdb: the database does not have it.
        SumdbError: its answer does not verify.
        UpstreamError: the database could not be reached.
    """
    key = VerifierKey.parse(db.key)
    try:
        body, _ = fetch(db, f"lookup/{escape(module)}@{escape(version)}")
    except UpstreamNotFound:
        raise NotInSumdb(f"{module}@{version}") from None
    head, sep, note = body.partition(b"\n\n")
    id_line, _, record_text = head.partition(b"\n")
    record = record_text + b"\n"
    if not sep or not id_line.isdigit():
        raise SumdbError("malformed lookup answer")
    tree = verify_note(note, key).decode().split("\n")
    if len(tree) < 4 or tree[0] != "go.sum database tree" or not tree[1].isdigit():
        raise SumdbError("malformed tree head")
    size, root = int(tree[1]), base64.b64decode(tree[2])

    def read_tile(level: int, index: int, width: int) -> bytes:
        return fetch(db, tlog.tile_path(level, index, width))[0]

    if not tlog.record_in_tree(record, int(id_line), size, root, read_tile):
        raise SumdbError("lookup record is not in the signed tree")
    sums: dict[str, str] = {}
    for line in record_text.decode().splitlines():
        fields = line.split(" ")
        if len(fields) == 3 and fields[0] == module:
            sums[fields[1]] = fields[2]
    if version not in sums or f"{version}/go.mod" not in sums:
        raise SumdbError("lookup record is for another module version")
    return Sums(zip=sums[version], mod=sums[f"{version}/go.mod"])
