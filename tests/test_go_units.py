"""Unit checks of the Go pieces against independent references: module path/version rules,
h1 hashes (tests/support/gomodules.py, cross-checked with Go's dirhash), signed notes,
tile-based inclusion proofs and tile verification, answer shapes and cache keys."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from goproxy import tlog
from goproxy.keys import file_key
from goproxy.paths import InvalidPath, check_module_path, check_version, escape, unescape
from goproxy.sumdb import SumdbError, VerifierKey, verify_note
from goproxy.verify import check_info, check_zip, h1, zip_h1
from mirror.errors import InvalidContent
from mirror.storage.base import check_key
from tests.support.gomodules import Module, h1_zip

# The go command's built-in key (cmd/go/internal/modfetch/key.go).
SUM_GOLANG_ORG = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"


@pytest.mark.parametrize(
    "path", ["example.com/Upper/Mod", "golang.org/x/mod", "github.com/a/b/v2", "gopkg.in/yaml.v3"]
)
def test_valid_module_paths(path: str) -> None:
    assert check_module_path(path) == path
    assert unescape(escape(path)) == path


@pytest.mark.parametrize(
    "path",
    ["../x", "example/x", "Example.com/x", "example.com/../x", "example.com/x/v1", "a.com//b",
     "a.com/.git", "a.com/con", "-a.com/x", "a.com/x\x00", "a.com/x/", "a.com/x y"],
)  # fmt: skip
def test_invalid_module_paths(path: str) -> None:
    with pytest.raises(InvalidPath):
        check_module_path(path)


@pytest.mark.parametrize(
    ("path", "version", "ok"),
    [
        ("example.com/old", "v2.0.0+incompatible", True),
        ("example.com/a/v2", "v2.1.0", True),
        ("example.com/a", "v0.0.0-20240101000000-abcdefabcdef", True),
        ("example.com/a", "v1.0.0-rc.1", True),
        ("example.com/a", "v2.0.0", False),
        ("example.com/a/v2", "v1.0.0", False),
        ("example.com/a", "v1.0", False),
        ("example.com/a", "1.0.0", False),
        ("example.com/a/v2", "v2.0.0+incompatible", False),
        ("example.com/a", "v1.0.0+build", False),
        ("example.com/a", "v01.0.0", False),
    ],
)
def test_versions(path: str, version: str, ok: bool) -> None:
    if ok:
        assert check_version(path, version) == version
    else:
        with pytest.raises(InvalidPath):
            check_version(path, version)


@pytest.mark.parametrize("bad", ["Upper", "a!", "a!1", "!!a"])
def test_unescape_rejects(bad: str) -> None:
    with pytest.raises(InvalidPath):
        unescape(bad)


def test_h1_matches_reference(tmp_path: Path) -> None:
    module = Module(
        "example.com/sub", "v1.0.0", files={"b/z.go": b"package b\n", "a.go": b"package sub\n"}
    )
    path = tmp_path / "m.zip"
    path.write_bytes(module.zip_bytes())
    names = check_zip(path, module.path, module.version)
    assert zip_h1(path, names) == h1_zip(module.zip_bytes())
    assert h1([("go.mod", module.mod_bytes())]) == module.h1_mod()


def _zip(tmp_path: Path, names: list[str]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    path = tmp_path / "bad.zip"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize(
    "names",
    [
        ["other@v1.0.0/a.go"],
        ["example.com/m@v1.0.0/../a.go"],
        ["example.com/m@v1.0.0/a/./b.go"],
        ["example.com/m@v1.0.0/A.go", "example.com/m@v1.0.0/a.go"],
        ["example.com/m@v1.0.0/sub/go.mod"],
        ["example.com/m@v1.0.0/a\\b.go"],
    ],
)
def test_zip_rules(tmp_path: Path, names: list[str]) -> None:
    with pytest.raises(InvalidContent):
        check_zip(_zip(tmp_path, names), "example.com/m", "v1.0.0")


def test_real_sum_golang_org_key_parses() -> None:
    key = VerifierKey.parse(SUM_GOLANG_ORG)
    assert key.name == "sum.golang.org" and key.key_hash == 0x033DE0AE


def _signed(text: bytes, name: str) -> tuple[bytes, VerifierKey]:
    private = Ed25519PrivateKey.generate()
    raw = b"\x01" + private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_hash = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    vkey = f"{name}+{key_hash.hex()}+{base64.b64encode(raw).decode()}"
    signature = base64.b64encode(key_hash + private.sign(text)).decode()
    return text + f"\n\u2014 {name} {signature}\n".encode(), VerifierKey.parse(vkey)


def test_note_signature() -> None:
    text = b"go.sum database tree\n3\nAAAA\n"
    note, key = _signed(text, "sum.example")
    assert verify_note(note, key) == text
    with pytest.raises(SumdbError):
        verify_note(note.replace(b"tree\n3", b"tree\n4"), key)
    _, other = _signed(text, "sum.example")
    with pytest.raises(SumdbError):
        verify_note(note, other)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 256, 257, 300, 70000])
def test_inclusion_proof_from_tiles(size: int) -> None:
    records = [f"record {i}\n".encode() for i in range(size)]
    level0 = [tlog.record_hash(r) for r in records]
    levels = [level0]  # stored hashes at tree levels 0, 8, 16, ...
    while len(levels[-1]) >= 256:
        below = levels[-1]
        levels.append([_complete(below[i : i + 256]) for i in range(0, len(below) - 255, 256)])
    root = _root(level0)

    def read_tile(level: int, index: int, width: int) -> bytes:
        return b"".join(levels[level][index * 256 : index * 256 + width])

    for index in {0, size // 2, size - 1}:
        assert tlog.record_in_tree(records[index], index, size, root, read_tile)
        assert not tlog.record_in_tree(b"forged\n", index, size, root, read_tile)
    assert tlog.tile_path(0, 1234567, 256) == "tile/8/0/x001/x234/567"
    assert tlog.tile_path(1, 5, 3) == "tile/8/1/005.p/3"


def _complete(hashes: list[bytes]) -> bytes:
    while len(hashes) > 1:
        hashes = [tlog.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _root(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash, written independently of goproxy.tlog."""
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return tlog.node_hash(_root(leaves[:split]), _root(leaves[split:]))


def _levels(size: int) -> list[list[bytes]]:
    """Stored hashes at tree levels 0, 8, 16, ... of a tree of `size` records."""
    levels = [[tlog.record_hash(f"record {i}\n".encode()) for i in range(size)]]
    while len(levels[-1]) >= 256:
        below = levels[-1]
        levels.append([_complete(below[i : i + 256]) for i in range(0, len(below) - 255, 256)])
    return levels


@pytest.mark.parametrize("size", [1, 2, 5, 256, 257, 600, 70000])
def test_every_tile_of_a_tree_verifies_and_no_altered_one_does(size: int) -> None:
    levels = _levels(size)
    root = _root(levels[0])

    def read_tile(level: int, index: int, width: int) -> bytes:
        return b"".join(levels[level][index * 256 : index * 256 + width])

    for level, hashes in enumerate(levels):
        tiles = (len(hashes) + 255) // 256
        for index in {0, tiles // 2, tiles - 1}:
            width = min(256, len(hashes) - index * 256)
            tile = read_tile(level, index, width)
            assert tlog.tile_in_tree(level, index, width, tile, size, root, read_tile)
            for at in {0, len(tile) // 2, len(tile) - 1}:  # every byte counts
                bad = tile[:at] + bytes([tile[at] ^ 1]) + tile[at + 1 :]
                assert not tlog.tile_in_tree(level, index, width, bad, size, root, read_tile)
            assert not tlog.tile_in_tree(level, index, width, tile[:-1], size, root, read_tile)
            # A tile of a later tree than the one signed cannot be shown to belong to it.
            assert not tlog.tile_in_tree(level, index, width + 1, tile, size, root, read_tile)


def test_a_partial_tile_of_an_older_tree_verifies_against_a_newer_one() -> None:
    levels = _levels(300)

    def read_tile(level: int, index: int, width: int) -> bytes:
        return b"".join(levels[level][index * 256 : index * 256 + width])

    older = read_tile(0, 1, 20)  # leaves 256..275: the tree had 276 records then
    assert tlog.tile_in_tree(0, 1, 20, older, 300, _root(levels[0]), read_tile)


@pytest.mark.parametrize(
    ("path", "parsed"),
    [
        ("tile/8/0/000", (0, 0, 256)),
        ("tile/8/1/x001/234.p/7", (1, 1234, 7)),
        ("tile/8/data/005", (tlog.DATA_LEVEL, 5, 256)),
        ("tile/8/0/000.p/256", None),  # a full tile has no .p/
        ("tile/8/0/000.p/0", None),
        ("tile/8/0/x000/001", None),  # not canonical
        ("tile/8/0/1", None),
        ("tile/4/0/000", None),
        ("tile/8/0/../000", None),
    ],
)
def test_tile_paths(path: str, parsed: tuple[int, int, int] | None) -> None:
    assert tlog.parse_tile_path(path) == parsed
    if parsed is not None:
        assert tlog.tile_path(*parsed) == path


@pytest.mark.parametrize(
    "key",
    ["", "sum.golang.org", "a+b+c", "sum.golang.org+033de0ae+!!!!", "+033de0ae+" + "A" * 44,
     "sum.golang.org+033de0af+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
     "sum.golang.org+0x3de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"],
)  # fmt: skip
def test_malformed_verifier_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        VerifierKey.parse(key)


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (b'{"Version": "v1.2.3", "Time": "2024-01-01T00:00:00Z"}', True),
        (b'{"Version": "v1.2.3", "Time": "2019-04-18T07:46:44.123456789+02:00"}', True),
        (b'{"Version": "v1.2.3"}', True),
        (b'{"Version": 5}', False),
        (b'["v1.2.3"]', False),
        (b'"v1.2.3"', False),
        (b'{"Version": "v1.2"}', False),
        (b'{"Version": "v2.0.0"}', False),  # not a version of this module path
        (b'{"Version": "v1.2.3", "Time": 5}', False),
        (b'{"Version": "v1.2.3", "Time": "2024-01-01"}', False),
        (b"\xff\xfe", False),
        (b"", False),
    ],
)
def test_info_answers(body: bytes, ok: bool) -> None:
    if ok:
        assert check_info(body, "example.com/m") == "v1.2.3"
    else:
        with pytest.raises(InvalidContent):
            check_info(body, "example.com/m")


def test_file_keys_are_readable_scoped_or_hashed() -> None:
    assert file_key("", "example.com/Upper", "v1.0.0", "zip") == (
        "go/example.com/!upper/@v/v1.0.0.zip"
    )
    private = file_key("_private/corp/", "corp.example.com/x", "v1.0.0", "mod")
    assert private == "go/_private/corp/corp.example.com/x/@v/v1.0.0.mod"
    for module in ("example.com/-x", "example.com/" + "a" * 300, "example.com/" + "a/" * 240):
        key = file_key("", module, "v1.0.0", "info")
        assert key.startswith("go/_hashed/") and key.endswith(".info")
        assert check_key(key) == key
    assert file_key("", "example.com/-x", "v1.0.0", "info") != file_key(
        "_private/corp/", "example.com/-x", "v1.0.0", "info"
    )
