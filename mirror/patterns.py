"""Glob patterns over slash-separated paths, with GOPRIVATE semantics.

A pattern matches a path when it matches the path's leading elements, element by element
(`*` never crosses a `/`): `corp.example.com` matches `corp.example.com/x/y`, and
`github.com/corp/*` matches `github.com/corp/tool/v2`.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase


def matches(pattern: str, path: str) -> bool:
    wanted = pattern.strip("/").split("/")
    elements = path.split("/")
    if len(elements) < len(wanted):
        return False
    return all(fnmatchcase(e, w) for e, w in zip(elements, wanted, strict=False))


def matches_any(patterns: Iterable[str], path: str) -> bool:
    return any(matches(p, path) for p in patterns if p)
