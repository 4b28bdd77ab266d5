"""The chain of Go upstreams, with the go command's GOPROXY semantics.

Upstreams are tried in configured order; 404/410 means "try the next", any other failure
stops the chain unless the upstream is marked `fall_through`. A module matching an upstream's
`modules` patterns is private to those upstreams: it is never sent to any other upstream, nor
to the checksum database unless that upstream has `verify_sums`.
"""

from __future__ import annotations

import httpx

from mirror.errors import UpstreamError, UpstreamNotFound
from mirror.http import client_for
from mirror.patterns import matches_any
from mirror.upstreams import UpstreamInfo, upstreams_of_kind

from .paths import escape


def candidates(module: str) -> list[UpstreamInfo]:
    """The upstreams allowed to serve `module`, in order."""
    go = upstreams_of_kind("go")
    private = [u for u in go if u.modules and matches_any(u.modules, module)]
    return private or [u for u in go if not u.modules]


def is_private(module: str) -> bool:
    return any(u.modules and matches_any(u.modules, module) for u in upstreams_of_kind("go"))


def verifies_sums(module: str) -> bool:
    """Whether `module` is checked against the checksum database (public, or private with
    `verify_sums` set)."""
    return all(u.verify_sums for u in candidates(module))


def send(module: str, suffix: str, *, stream: bool = False) -> httpx.Response:
    """GET `/<escaped module>/<suffix>` from the first upstream that has it."""
    last: UpstreamError = UpstreamNotFound(f"no upstream is configured for {module}")
    for upstream in candidates(module):
        try:
            return client_for(upstream).send(
                "GET", f"/{escape(module)}/{suffix}", stream=stream, metadata=not stream
            )
        except UpstreamNotFound as e:
            last = e
        except UpstreamError as e:
            if not upstream.fall_through:
                raise
            last = e
    raise last


def ttl(module: str) -> tuple[float, float]:
    """(ttl, stale_max_age) for a module's lists: those of its first upstream."""
    first = next(iter(candidates(module)), None)
    return (first.tag_ttl, first.stale_max_age) if first else (60.0, 0.0)
