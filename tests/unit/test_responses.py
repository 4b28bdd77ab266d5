"""Range headers: what a client may ask, however absurd, is an answer, never a 500; nor is an
object that leaves the cache as it is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.content import StoredContent
from mirror.errors import ServiceUnavailable
from mirror.responses import RangeNotSatisfiable, parse_range
from mirror.storage.local import LocalStorage

HUGE = "9" * 5000  # Python's int() refuses more than 4300 digits


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 100)),
        ("bytes=10-", (10, 990)),
        ("bytes=-10", (990, 10)),
        (f"bytes=0-{HUGE}", (0, 1000)),  # an end past the object: up to its end
        (f"bytes=-{HUGE}", (0, 1000)),  # a suffix longer than the object: all of it
        ("bytes=" + "0" * 5000 + "5-9", (5, 5)),  # leading zeros are still small numbers
        ("bytes=0-1,5-9", None),  # several ranges: the whole object
        ("items=0-1", None),
    ],
)
def test_ranges(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes={HUGE}-{HUGE}", "bytes=1000-"])
def test_past_the_end_is_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_an_object_gone_between_the_look_and_the_open_is_a_503(tmp_path: Path) -> None:
    """Eviction may take an object between `fill.stored()`'s look and the open: the client
    gets a 503 to retry (which fetches it anew), not a 500."""
    content = StoredContent(LocalStorage(str(tmp_path)), "blobs/sha256/ab/" + "ab" * 32, 10)
    with pytest.raises(ServiceUnavailable) as raised:
        content.open()
    assert raised.value.retry_after == 1
