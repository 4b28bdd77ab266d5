"""The chain of Go upstreams, with the go command's GOPROXY semantics.

Upstreams are tried in configured order; 404/410 means "try the next", any other failure
stops the chain unless the upstream is marked `fall_through`. A module matching an upstream's
`modules` patterns is private to the upstreams owning those patterns: it is never sent to any
other upstream, nor to the checksum database unless its upstreams have `verify_sums`. An owner
that is disabled still owns its patterns: with no enabled owner left, the module is not found,
rather than asked of the public upstreams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from mirror.errors import UpstreamError, UpstreamNotFound
from mirror.http import Answer, client_for
from mirror.patterns import matches_any
from mirror.upstreams import UpstreamInfo, upstreams_of_kind

from .paths import escape

T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    """Where a module comes from.

    Attributes:
        upstreams: the enabled upstreams allowed to serve it, in order (may be empty).
        scope: cache scope of its files and lists: "" for public modules,
            `_private/<owner>[+<owner>...]/` for private ones (see keys.py).
        private: whether private upstreams own it (enabled or not).
        verify_sums: whether it is checked against (and may be sent to) the checksum database.
    """

    module: str
    upstreams: tuple[UpstreamInfo, ...]
    scope: str
    private: bool
    verify_sums: bool

    def first_answer(self, attempt: Callable[[UpstreamInfo], T]) -> T:
        """`attempt(upstream)` for each upstream in order until one answers; 404/410 go on to
        the next, other failures stop unless that upstream is `fall_through`."""
        last: UpstreamError = UpstreamNotFound(f"no upstream serves {self.module}")
        for upstream in self.upstreams:
            try:
                return attempt(upstream)
            except UpstreamNotFound as e:
                last = e
            except UpstreamError as e:
                if not upstream.fall_through:
                    raise
                last = e
        raise last

    def fetch(self, suffix: str, cap: int | None = None) -> Answer:
        """A small answer (`@v/list`, `@latest`, `.info`, `.mod`), capped (at `cap` bytes, by
        default MIRROR_MAX_METADATA_BYTES) and within the metadata deadline."""
        path = f"/{escape(self.module)}/{suffix}"
        return self.first_answer(lambda upstream: client_for(upstream).fetch("GET", path, cap=cap))

    def open(self, suffix: str) -> httpx.Response:
        """A streamed answer (a `.zip` for the fill); the caller closes it."""
        path = f"/{escape(self.module)}/{suffix}"
        return self.first_answer(
            lambda upstream: client_for(upstream).send("GET", path, metadata=False)
        )

    def ttl(self) -> tuple[float, float]:
        """(ttl, stale_max_age) for the module's lists: those of its first upstream."""
        first = next(iter(self.upstreams), None)
        return (first.tag_ttl, first.stale_max_age) if first else (60.0, 0.0)


def private_owners(module: str) -> list[UpstreamInfo]:
    """The Go upstreams, disabled ones included, whose patterns match `module`."""
    return [
        u
        for u in upstreams_of_kind("go", include_disabled=True)
        if u.modules and matches_any(u.modules, module)
    ]


def route(module: str) -> Route:
    if owners := private_owners(module):
        enabled = tuple(u for u in owners if u.enabled)
        scope = "_private/" + "+".join(u.name for u in enabled) + "/"
        verify = bool(enabled) and all(u.verify_sums for u in enabled)
        return Route(module, enabled, scope, True, verify)
    public = tuple(u for u in upstreams_of_kind("go") if not u.modules)
    return Route(module, public, "", False, all(u.verify_sums for u in public))
