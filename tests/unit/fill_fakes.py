"""A fake upstream and a fault-injecting storage for the fill's unit tests.

The fill's contract with its parts is small (a `Source` of chunks, a `Storage` whose writer
writes, commits and aborts), so the unit tier drives it with stand-ins that can fail at an
exact moment: a full disk on the third write, an abort that raises, an upstream that stalls
after its first chunk. Those moments cannot be produced on demand with the real parts.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Container, Iterator
from pathlib import Path
from typing import BinaryIO

from mirror.content import Source
from mirror.storage.base import Storage, Writer
from mirror.storage.local import LocalStorage

CHUNK = 64 * 1024


def key_of(data: bytes) -> tuple[str, str]:
    """(storage key, digest) of `data`, as the OCI side names blobs."""
    hexpart = hashlib.sha256(data).hexdigest()
    return f"blobs/sha256/{hexpart[:2]}/{hexpart}", f"sha256:{hexpart}"


class Upstream:
    """A fake upstream body, paced by the test.

    `flowing` is set by default; clear it and the body stalls before its next chunk (for at
    most `stall_limit` seconds, so that a broken fill cannot hang the tier). Likewise
    `answering`: clear it and `fetch` (which sets `asked`) waits before it answers. `pause_after`
    chunks, the body clears it itself. `announce` overrides the size told to the fill;
    `endless` repeats `data` for ever.
    """

    def __init__(
        self,
        data: bytes,
        *,
        announce: int | bool | None = True,
        endless: bool = False,
        delay: float = 0.0,
        pause_after: int | None = None,
    ) -> None:
        self.data = data
        self.size = len(data) if announce is True else (announce or None)
        self.endless = endless
        self.delay = delay
        self.pause_after = pause_after
        self.flowing = threading.Event()
        self.flowing.set()
        self.stall_limit = 10.0
        self.fetches = 0
        self.sent = 0
        self.closed = threading.Event()
        self.asked = threading.Event()
        self.answering = threading.Event()
        self.answering.set()

    def fetch(self) -> Source:
        self.fetches += 1
        self.asked.set()
        if not self.answering.wait(self.stall_limit):
            raise TimeoutError("the test never let the fake upstream answer")
        return Source(size=self.size, chunks=self._chunks(), close=self.closed.set)

    def _chunks(self) -> Iterator[bytes]:
        while True:
            for i in range(0, len(self.data), CHUNK):
                if not self.flowing.wait(self.stall_limit):
                    raise TimeoutError("the test never let the fake upstream go on")
                if self.closed.is_set():
                    return
                if self.delay:
                    time.sleep(self.delay)
                chunk = self.data[i : i + CHUNK]
                self.sent += len(chunk)
                if self.pause_after is not None and self.sent >= self.pause_after * CHUNK:
                    self.pause_after = None
                    self.flowing.clear()
                yield chunk
            if not self.endless:
                return


class Faults:
    """What the next writer of a `FaultyStorage` does wrong (each fault once, then it works)."""

    def __init__(self) -> None:
        self.write: BaseException | None = None
        self.write_after = 0  # writes that succeed before `write` is raised
        self.commit: BaseException | None = None
        self.abort: BaseException | None = None


class FaultyWriter(Writer):
    def __init__(self, inner: Writer, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults
        self.spool_path = inner.spool_path

    def write(self, chunk: bytes) -> None:
        if self.faults.write is not None:
            if self.faults.write_after <= 0:
                error, self.faults.write = self.faults.write, None
                raise error
            self.faults.write_after -= 1
        self.inner.write(chunk)

    def commit(self) -> None:
        if (error := self.faults.commit) is not None:
            self.faults.commit = None
            raise error
        self.inner.commit()

    def abort(self) -> None:
        self.inner.abort()  # the bytes are gone; then the call "times out" all the same
        if (error := self.faults.abort) is not None:
            self.faults.abort = None
            raise error


class FaultyStorage(Storage):
    """A real local storage whose writers fail as `faults` says, and whose free space can
    be made to look low."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalStorage(root)
        self.faults = Faults()
        self.free: int | None = None

    @property
    def tmp(self) -> Path:
        return self.inner.tmp

    def stat(self, key: str) -> int | None:
        return self.inner.stat(key)

    def open(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        return self.inner.open(key, start, length)

    def writer(self, key: str) -> Writer:
        return FaultyWriter(self.inner.writer(key), self.faults)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def sweep(self, older_than: float, live: Container[str] = frozenset()) -> int:
        return self.inner.sweep(older_than, live)

    def free_bytes(self) -> int | None:
        return self.inner.free_bytes() if self.free is None else self.free

    def check_writable(self, min_free: int) -> None:
        self.inner.check_writable(min_free)
