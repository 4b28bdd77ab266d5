"""The bounded in-process cache of answers (mirror/memo.py): deadlines, and sizes when a
`sizeof` is given."""

from __future__ import annotations

import time

from mirror.memo import Memo


def test_an_entry_lives_until_its_deadline_and_not_when_given_no_time() -> None:
    memo = Memo(10)
    memo.put("a", b"x", 0.05)
    memo.put("never", b"y", 0)
    assert memo.get("a") == b"x" and memo.get("never") is None
    time.sleep(0.06)
    assert memo.get("a") is None


def test_with_sizeof_the_bound_is_the_total_size_and_a_value_over_it_is_not_kept() -> None:
    memo = Memo(100, sizeof=len)
    memo.put("a", b"a" * 60, 60)
    memo.put("b", b"b" * 30, 60)
    assert memo.get("a") is not None and memo.get("b") is not None
    memo.put("c", b"c" * 30, 60)  # 120 in all: the least recently used goes
    assert memo.get("a") is None and memo.get("b") is not None and memo.get("c") is not None
    memo.put("big", b"z" * 101, 60)  # larger than the whole memo: not kept, nothing lost
    assert memo.get("big") is None and memo.get("b") is not None and memo.get("c") is not None
