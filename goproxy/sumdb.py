"""The checksum database: proxying its endpoints, and checking modules against it.

Nothing the database answers is cached before it verifies:
- `latest` (the signed tree head): its note must be signed by the configured key.
- `lookup/M@V` (`ID\\nRECORD\\n\\nSIGNED-TREE-NOTE`): the note is signed, the record is for
  M@V, and it is proven (from tiles) to be leaf ID of the tree the note signs.
- `tile/8/L/N[.p/W]`: the tile recomputes the root of a signed tree (`tlog.tile_in_tree`).
  Tiles read along the way are kept once they verify in turn.
- `tile/8/data/...` (record data, which the go command does not use): passed on, capped, and
  never cached.
Answers that fail are an UpstreamInvalid (502, or the last verified answer, STALE).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from mirror.documents import get_document, peek
from mirror.errors import UpstreamInvalid, UpstreamNotFound, UpstreamUnavailable
from mirror.http import client_for
from mirror.upstreams import UpstreamInfo, upstreams_of_kind

from . import keys, tlog
from .paths import escape

if TYPE_CHECKING:  # cryptography is imported by the first key parsed (~7 MiB of a worker)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# How long answers are reused: the signed tree head briefly, lookups for a day, tiles (which
# never change once verified) for ten years, or an hour for partial ones (superseded soon).
LATEST_TTL = 60
LOOKUP_TTL = 86400
TILE_TTL = 10 * 365 * 86400
PARTIAL_TILE_TTL = 3600
STALE_MAX_AGE = 7 * 24 * 3600
# A lookup answer or tree head is two go.sum lines and a signed note: well under this.
MAX_ANSWER = 64 << 10
_ALG_ED25519 = 1
_KEY_HASH = re.compile(r"^[0-9a-fA-F]{8}$")


class SumdbError(UpstreamInvalid):
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
        """Parse `name+hash+base64key`, as golang.org/x/mod/sumdb/note does; ValueError when
        it is malformed."""
        try:
            name, hash_hex, encoded = vkey.split("+", 2)  # base64 may contain "+"
            raw = base64.b64decode(encoded, validate=True)
        except ValueError as e:
            raise ValueError(f"malformed verifier key (NAME+HASH+KEY): {e}") from None
        if not name or not _KEY_HASH.match(hash_hex):
            raise ValueError("malformed verifier key: expected NAME+HASH+KEY")
        key_hash = int(hash_hex, 16)
        if len(raw) != 33 or raw[0] != _ALG_ED25519:
            raise ValueError("verifier key is not an Ed25519 key")
        if int.from_bytes(hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]) != key_hash:
            raise ValueError("verifier key hash does not match its name and key")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return cls(name, key_hash, Ed25519PublicKey.from_public_bytes(raw[1:]))


def verify_note(note: bytes, key: VerifierKey) -> bytes:
    """The note's text if one of its signatures is by `key`; raise SumdbError otherwise."""
    split = note.rfind(b"\n\n")
    if split < 0:
        raise SumdbError("malformed note")
    text, signatures = note[: split + 1], note[split + 2 :]
    from cryptography.exceptions import InvalidSignature

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


def _key(db: UpstreamInfo) -> VerifierKey:
    try:
        return VerifierKey.parse(db.key)
    except ValueError as e:  # refused at start (goproxy/checks.py); edited in the admin since
        raise UpstreamUnavailable(f"{db.name}: {e}") from None


def namespace(db: UpstreamInfo) -> str:
    """Where the database's answers are kept (mirror/documents.py)."""
    return f"sumdb:{db.name}"


def lookup_prefix(module: str, version: str = "") -> str:
    """The start of the document keys of the module's lookups (one version's, if given)."""
    return f"lookup/{escape(module)}@{escape(version)}"


def _download(db: UpstreamInfo, path: str, cap: int = MAX_ANSWER) -> bytes:
    return client_for(db).fetch("GET", f"/{path}", cap=cap).content


# --- signed tree heads -------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    size: int
    root: bytes


def _tree(note: bytes, key: VerifierKey) -> Tree:
    """The tree a signed note describes; SumdbError unless it is signed by `key`."""
    lines = verify_note(note, key).split(b"\n")
    if len(lines) < 4 or lines[0] != b"go.sum database tree" or not lines[1].isdigit():
        raise SumdbError("malformed tree head")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        root = b""
    if len(root) != 32:
        raise SumdbError("malformed tree hash")
    return Tree(int(lines[1]), root)


def latest(db: UpstreamInfo) -> tuple[bytes, str]:
    """The signed tree head (`latest`), verified, cached briefly."""

    def get() -> bytes:
        body = _download(db, "latest")
        _tree(body, _key(db))
        return body

    document = get_document(
        namespace(db), "latest", get, ttl=LATEST_TTL, stale_max_age=STALE_MAX_AGE
    )
    return document.body, document.cache


def _signed_tree(db: UpstreamInfo, *, fresh: bool = False) -> Tree:
    """The latest tree the database signed: the cached head, or (`fresh`) a new one."""
    body = _download(db, "latest") if fresh else latest(db)[0]
    return _tree(body, _key(db))


# --- tiles -------------------------------------------------------------------------------


def _tile_ttl(width: int) -> int:
    return TILE_TTL if width == tlog.TILE_WIDTH else PARTIAL_TILE_TTL


class _Tiles:
    """The tiles one verification against `tree` reads: cached ones (verified when they were
    stored), and downloaded ones, kept here unverified until `keep_verified`."""

    def __init__(self, db: UpstreamInfo, tree: Tree) -> None:
        self.db = db
        self.tree = tree
        self.downloaded: dict[tuple[int, int, int], bytes] = {}

    def read(self, level: int, index: int, width: int) -> bytes:
        if (data := self.downloaded.get((level, index, width))) is not None:
            return data
        path = tlog.tile_path(level, index, width)
        if (cached := peek(namespace(self.db), path)) is not None:
            return cached
        data = _download(self.db, path, cap=32 * width)
        if len(data) != 32 * width:
            raise SumdbError(f"{path}: {len(data)} bytes, not {32 * width}")
        self.downloaded[(level, index, width)] = data
        return data

    def verified(self, level: int, index: int, width: int) -> bytes:
        """The tile, shown to belong to the tree; SumdbError otherwise."""
        data = self.read(level, index, width)
        tree = self.tree
        if not tlog.tile_in_tree(level, index, width, data, tree.size, tree.root, self.read):
            raise SumdbError(f"{tlog.tile_path(level, index, width)} does not hash to the tree")
        return data

    def keep_verified(self, *, but: str = "") -> None:
        """Cache the downloaded tiles (except the one at `but`) that belong to the tree."""
        for level, index, width in list(self.downloaded):
            path = tlog.tile_path(level, index, width)
            if path == but:
                continue
            try:
                data = self.verified(level, index, width)
            except SumdbError:
                continue  # used but not trusted: left uncached
            get_document(
                namespace(self.db),
                path,
                lambda data=data: data,
                ttl=_tile_ttl(width),
                stale_max_age=STALE_MAX_AGE,
            )


def tile(db: UpstreamInfo, path: str) -> tuple[bytes, str]:
    """A tile, by its canonical path, cached only once it is shown to belong to a tree the
    database signed. Raises UpstreamNotFound for a path that is not a tile."""
    parsed = tlog.parse_tile_path(path)
    if parsed is None:
        raise UpstreamNotFound(f"{path[:200]!r} is not a tile")
    level, index, width = parsed
    if level == tlog.DATA_LEVEL:
        return _download(db, path, settings.MIRROR_MAX_METADATA_BYTES), "MISS"

    def covered(tree: Tree) -> bool:
        return (index << tlog.TILE_HEIGHT) + width <= tree.size >> (level * tlog.TILE_HEIGHT)

    def get() -> bytes:
        tree = _signed_tree(db)
        if not covered(tree):  # of a newer tree than the cached head?
            tree = _signed_tree(db, fresh=True)
            if not covered(tree):
                raise UpstreamNotFound(f"{path} is beyond the signed tree")
        tiles = _Tiles(db, tree)
        data = tiles.verified(level, index, width)
        tiles.keep_verified(but=path)
        return data

    document = get_document(
        namespace(db), path, get, ttl=_tile_ttl(width), stale_max_age=STALE_MAX_AGE
    )
    return document.body, document.cache


# --- lookups -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sums:
    zip: str  # h1:...
    mod: str


def _parse_lookup(body: bytes, module: str, version: str) -> tuple[int, bytes, bytes, Sums]:
    """(record id, record, signed note, the hashes) of a lookup answer; SumdbError when it is
    malformed or not about module@version. The note's signature is not checked here."""
    head, sep, note = body.partition(b"\n\n")
    id_line, _, record_text = head.partition(b"\n")
    if not sep or not id_line.isdigit() or len(id_line) > 18:
        raise SumdbError("malformed lookup answer")
    sums: dict[str, str] = {}
    for line in record_text.decode("utf-8", "replace").splitlines():
        fields = line.split(" ")
        if len(fields) == 3 and fields[0] == module:
            sums[fields[1]] = fields[2]
    if version not in sums or f"{version}/go.mod" not in sums:
        raise SumdbError("lookup record is for another module version")
    record = record_text + b"\n"
    return int(id_line), record, note, Sums(zip=sums[version], mod=sums[f"{version}/go.mod"])


def lookup_answer(db: UpstreamInfo, module: str, version: str) -> tuple[bytes, str]:
    """The database's answer for module@version, verified before it is cached.

    Raises:
        UpstreamNotFound: the database does not have it.
        SumdbError: its answer does not verify (and no verified answer is cached).
        UpstreamError: the database could not be reached.
    """
    path = lookup_prefix(module, version)

    def get() -> bytes:
        body = _download(db, path)
        record_id, record, note, _ = _parse_lookup(body, module, version)
        tree = _tree(note, _key(db))
        tiles = _Tiles(db, tree)
        if not tlog.record_in_tree(record, record_id, tree.size, tree.root, tiles.read):
            raise SumdbError("lookup record is not in the signed tree")
        tiles.keep_verified()
        return body

    document = get_document(
        namespace(db), keys.document_key(path), get, ttl=LOOKUP_TTL, stale_max_age=STALE_MAX_AGE
    )
    return document.body, document.cache


def lookup(db: UpstreamInfo, module: str, version: str) -> Sums:
    """The verified hashes of module@version.

    Raises:
        NotInSumdb: the database does not have it.
        SumdbError: its answer does not verify.
        UpstreamError: the database could not be reached.
    """
    try:
        body, _ = lookup_answer(db, module, version)
    except UpstreamNotFound:
        raise NotInSumdb(f"{module}@{version}") from None
    return _parse_lookup(body, module, version)[3]


def warm_tiles(db: UpstreamInfo, module: str, version: str) -> None:
    """Cache the tiles the go command reads to check the lookup of module@version in the tree
    its answer names (tlog.client_tiles), so that it can check it while the database is
    down. The mirror's own proof reads only some of them (not the record's own hash).

    Raises what `lookup_answer` and `tile` raise."""
    body, _ = lookup_answer(db, module, version)
    record_id, _, note, _ = _parse_lookup(body, module, version)
    tree = _tree(note, _key(db))
    for level, index, width in tlog.client_tiles(tree.size, record_id):
        tile(db, tlog.tile_path(level, index, width))
