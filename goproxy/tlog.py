"""Just enough of the transparency log (golang.org/x/mod/sumdb/tlog) to prove that a
checksum-database record is in the tree whose root the database signed.

Hashes follow RFC 6962: leaves `SHA256(0x00 || record)`, nodes `SHA256(0x01 || left || right)`.
The database publishes its stored hashes in tiles of height 8; `read_hashes(level, start,
count)` returns hashes of complete subtrees at a tile level. The result is checked against the
signed root, so tile contents need no trust of their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

TILE_HEIGHT = 8

# (tile level, tile index, tile width) -> the tile's bytes
TileReader = Callable[[int, int, int], bytes]


def record_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tile_path(level: int, index: int, width: int) -> str:
    """`tile/8/L/x001/234[.p/W]`, as tlog.Tile.Path writes it."""
    n = f"{index % 1000:03d}"
    rest = index // 1000
    while rest:
        n = f"x{rest % 1000:03d}/{n}"
        rest //= 1000
    partial = "" if width == 1 << TILE_HEIGHT else f".p/{width}"
    return f"tile/{TILE_HEIGHT}/{level}/{n}{partial}"


class _Hashes:
    """Subtree hashes of a tree of `size` records, read from tiles (each tile read once)."""

    def __init__(self, size: int, read_tile: TileReader) -> None:
        self.size = size
        self.read_tile = read_tile
        self.tiles: dict[tuple[int, int], bytes] = {}

    def _stored(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree of 2**level leaves starting at leaf index << level."""
        tile_level, within = divmod(level, TILE_HEIGHT)
        # The subtree is 2**within consecutive hashes at tree level tile_level * 8.
        base = tile_level * TILE_HEIGHT
        first = index << within
        count = 1 << within
        tile_index = first >> TILE_HEIGHT
        available = (self.size >> base) - (tile_index << TILE_HEIGHT)
        width = min(1 << TILE_HEIGHT, available)
        key = (tile_level, tile_index)
        if key not in self.tiles:
            data = self.read_tile(tile_level, tile_index, width)
            if len(data) != 32 * width:
                raise ValueError("tile has the wrong size")
            self.tiles[key] = data
        data = self.tiles[key]
        offset = first - (tile_index << TILE_HEIGHT)
        hashes = [data[32 * i : 32 * i + 32] for i in range(offset, offset + count)]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def subtree(self, lo: int, hi: int) -> bytes:
        """Hash of leaves [lo, hi), split as RFC 6962 does."""
        size = hi - lo
        if size & (size - 1) == 0 and lo % size == 0:
            return self._stored(size.bit_length() - 1, lo // size)
        split = 1 << ((size - 1).bit_length() - 1)
        return node_hash(self.subtree(lo, lo + split), self.subtree(lo + split, hi))

    def root_with(self, lo: int, hi: int, index: int, leaf: bytes) -> bytes:
        """Hash of leaves [lo, hi) computed with our own `leaf` at `index`."""
        if hi - lo == 1:
            return leaf
        split = 1 << ((hi - lo - 1).bit_length() - 1)
        if index < lo + split:
            return node_hash(
                self.root_with(lo, lo + split, index, leaf), self.subtree(lo + split, hi)
            )
        return node_hash(self.subtree(lo, lo + split), self.root_with(lo + split, hi, index, leaf))


def record_in_tree(
    record: bytes, index: int, size: int, root: bytes, read_tile: TileReader
) -> bool:
    """Whether `record` is leaf `index` of the tree of `size` leaves whose hash is `root`."""
    if not 0 <= index < size:
        return False
    computed = _Hashes(size, read_tile).root_with(0, size, index, record_hash(record))
    return computed == root
