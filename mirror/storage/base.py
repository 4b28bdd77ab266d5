"""The storage interface: every backend implements these contracts.

Keys are relative, slash-separated, content-addressed and final (`blobs/sha256/ab/abcd...`).
An object becomes visible under its key only through `Writer.commit()`, atomically: a reader
never sees a partial object, whatever happens to the writer.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Container
from pathlib import Path
from typing import BinaryIO

# Content keys (`blobs/sha256/ab/...`) and Go keys (`go/example.com/!upper/@v/v1.0.0.zip`).
_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9!~_@][a-z0-9._!@+~-]*)*$", re.IGNORECASE)


class ObjectNotFound(Exception):
    """The key has no committed object."""


def check_key(key: str) -> str:
    """Refuse keys that could escape the storage root (`..`, absolute paths, odd bytes)."""
    if len(key) > 512 or not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


class Writer(ABC):
    """An object being written. Exactly one of `commit()` or `abort()` ends it."""

    #: A local file holding the bytes written so far, readable while it grows; None when the
    #: backend has no such file (then the fill keeps a spool of its own for followers).
    spool_path: Path | None = None

    @abstractmethod
    def write(self, chunk: bytes) -> None:
        """Append bytes. Memory use stays bounded whatever the object's size.

        A full disk raises OSError(ENOSPC) as the system gives it; the fill reports it as
        StorageFull."""

    @abstractmethod
    def commit(self) -> None:
        """Make the bytes written visible under the key, atomically (all or nothing).

        On failure (ENOSPC included) nothing is visible; the caller still calls `abort()`."""

    @abstractmethod
    def abort(self) -> None:
        """Discard everything written; nothing becomes visible. Safe to call twice."""


class Storage(ABC):
    """Content storage. Implementations must be safe to share between threads."""

    @abstractmethod
    def stat(self, key: str) -> int | None:
        """Size of the committed object, or None when there is none."""

    @abstractmethod
    def open(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        """A readable stream of the object's bytes [start, start+length).

        Raises ObjectNotFound. A local backend returns a real file positioned at `start` so
        that the server can use sendfile; callers must not read past `length` themselves.
        The caller owns the stream and closes it (the HTTP response does, for answers).
        """

    @abstractmethod
    def writer(self, key: str) -> Writer:
        """Start writing a new object that `commit()` will publish under `key`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the committed object; a missing key is not an error."""

    def presigned_url(self, key: str) -> str | None:
        """A URL a client may fetch the object from directly, or None if unsupported."""
        return None

    @abstractmethod
    def sweep(self, older_than: float, live: Container[str] = frozenset()) -> int:
        """Remove temporaries abandoned for more than `older_than` seconds; return how many.

        Temporaries of a key in `live` (a fill holding a live lease on it, perhaps on another
        instance) are never removed, however old; only this storage's own temporaries are
        considered (not another prefix's that happens to share the bucket)."""

    def free_bytes(self) -> int | None:
        """Bytes free for new objects, or None when the backend has no such limit (S3).
        Cheap enough to ask before every fill."""
        return None

    @abstractmethod
    def check_writable(self, min_free: int) -> None:
        """Write and remove a small probe; for readiness checks.

        Raises StorageFull when the probe cannot be written (the message says why) or, where
        the backend has a free-space figure, when fewer than `min_free` bytes are free."""
