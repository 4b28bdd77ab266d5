"""Just enough of the transparency log (golang.org/x/mod/sumdb/tlog) to prove that a
checksum-database record is in the tree whose root the database signed.

Hashes follow RFC 6962: leaves `SHA256(0x00 || record)`, nodes `SHA256(0x01 || left || right)`.
The database publishes its stored hashes in tiles of height 8: tile (L, N, W) holds the W
hashes of complete subtrees of 2**(8L) leaves starting at subtree N * 256. Results are checked
against the signed root, so tile contents need no trust of their own; a tile is itself shown
to be right (`tile_in_tree`) by recomputing the root with every one of its hashes standing for
the leaves they cover.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
DATA_LEVEL = -1  # `tile/8/data/...`: the records themselves, not hashes
_TILE_PATH = re.compile(
    r"^tile/8/(?P<level>data|[0-9])/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})(?:\.p/(?P<width>[0-9]{1,3}))?$"
)

# (tile level, tile index, tile width) -> the tile's bytes
TileReader = Callable[[int, int, int], bytes]


def record_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tile_path(level: int, index: int, width: int) -> str:
    """`tile/8/L/x001/234[.p/W]` (L `data` for DATA_LEVEL), as tlog.Tile.Path writes it."""
    n = f"{index % 1000:03d}"
    rest = index // 1000
    while rest:
        n = f"x{rest % 1000:03d}/{n}"
        rest //= 1000
    partial = "" if width == TILE_WIDTH else f".p/{width}"
    name = "data" if level == DATA_LEVEL else str(level)
    return f"tile/{TILE_HEIGHT}/{name}/{n}{partial}"


def parse_tile_path(path: str) -> tuple[int, int, int] | None:
    """(level, index, width) of a canonical tile path (level DATA_LEVEL for data tiles), or
    None: what tlog.ParseTilePath accepts, written back the same way by `tile_path`."""
    match = _TILE_PATH.match(path)
    if match is None:
        return None
    level = DATA_LEVEL if match["level"] == "data" else int(match["level"])
    index = int(match["index"].replace("x", "").replace("/", ""))
    width = int(match["width"] or TILE_WIDTH)
    if not 0 < width <= TILE_WIDTH or tile_path(level, index, width) != path:
        return None
    return level, index, width


@dataclass(frozen=True)
class _Pinned:
    """A tile under test: its hashes stand for the leaves [lo, hi) in the root computation."""

    base: int  # tree level of its hashes (tile level * 8)
    lo: int
    hi: int
    data: bytes


class _Hashes:
    """Subtree hashes of a tree of `size` records, read from tiles (each tile read once)."""

    def __init__(self, size: int, read_tile: TileReader, pinned: _Pinned | None = None) -> None:
        self.size = size
        self.read_tile = read_tile
        self.pinned = pinned
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
        return _combine(self.tiles[key], first - (tile_index << TILE_HEIGHT), count)

    def subtree(self, lo: int, hi: int) -> bytes:
        """Hash of leaves [lo, hi), split as RFC 6962 does. Around a pinned tile, the split
        goes down to its level so that each of its hashes is used, and none of another tile's
        hashes for the same leaves."""
        size = hi - lo
        complete = size & (size - 1) == 0 and lo % size == 0
        pin = self.pinned
        if pin is not None and lo < pin.hi and pin.lo < hi:
            if complete and pin.lo <= lo and hi <= pin.hi:
                return _combine(pin.data, (lo - pin.lo) >> pin.base, size >> pin.base)
        elif complete:
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


def _combine(data: bytes, offset: int, count: int) -> bytes:
    """Hash of the complete subtree whose `count` (a power of two) bottom hashes are the
    32-byte hashes of `data` from position `offset`."""
    hashes = [data[32 * i : 32 * i + 32] for i in range(offset, offset + count)]
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def record_in_tree(
    record: bytes, index: int, size: int, root: bytes, read_tile: TileReader
) -> bool:
    """Whether `record` is leaf `index` of the tree of `size` leaves whose hash is `root`."""
    if not 0 <= index < size:
        return False
    computed = _Hashes(size, read_tile).root_with(0, size, index, record_hash(record))
    return computed == root


def tile_in_tree(
    level: int, index: int, width: int, data: bytes, size: int, root: bytes, read_tile: TileReader
) -> bool:
    """Whether `data` is tile (level, index, width) of the tree of `size` leaves whose hash is
    `root`: the root recomputed with this tile's hashes for the leaves they cover (and other
    tiles, from `read_tile`, for the rest) must be `root`. As in tlog.TileHashReader, every
    byte of the tile is checked; the other tiles need no trust.
    """
    base = level * TILE_HEIGHT
    first = index << TILE_HEIGHT
    if level < 0 or not 0 < width <= TILE_WIDTH or len(data) != 32 * width:
        return False
    if first + width > size >> base:
        return False  # not a tile of this tree (yet)
    pinned = _Pinned(base, first << base, (first + width) << base, data)
    return _Hashes(size, read_tile, pinned).subtree(0, size) == root


def client_tiles(size: int, record: int) -> list[tuple[int, int, int]]:
    """The tiles (level, index, width) the go command reads to prove record `record` in the
    tree of `size` records (tlog.TileHashReader.ReadHashes): those holding the hashes of the
    complete subtrees that make up the tree, then the record's own tile and its parents up to
    one of those. A mirror that caches them lets the go command check that record offline."""

    def sized(level: int, index: int) -> tuple[int, int, int]:
        available = size >> (level * TILE_HEIGHT)
        return level, index, min(TILE_WIDTH, available - (index << TILE_HEIGHT))

    def tile_of(height: int, n: int) -> tuple[int, int, int]:
        """The tile holding the hash of the complete subtree of 2**height records number n."""
        level, within = divmod(height, TILE_HEIGHT)
        return sized(level, (n << within) >> TILE_HEIGHT)

    planned: list[tuple[int, int, int]] = []
    lo = 0
    while lo < size:
        height = (size - lo).bit_length() - 1
        if (tile := tile_of(height, lo >> height)) not in planned:
            planned.append(tile)
        lo += 1 << height
    level, index, _ = tile_of(0, record)
    path = []
    while (tile := sized(level, index)) not in planned:
        path.append(tile)
        level, index = level + 1, index >> TILE_HEIGHT
    return planned + path[::-1]
