"""Read-mostly view of the configured upstreams, cached per process for a few seconds.

The request path consults upstreams on every request; a short-lived snapshot avoids a query
per request while admin edits still take effect within MIRROR_UPSTREAM_CACHE_SECONDS.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import models

from .models import Upstream


@dataclass(frozen=True)
class UpstreamInfo:
    id: int
    name: str
    kind: str
    url: str
    prefix: str
    is_default: bool
    tag_ttl: int
    stale_max_age: int
    username: str
    password: str
    username_env: str
    password_env: str
    updated: float
    modules: tuple[str, ...] = ()
    verify_sums: bool = True
    fall_through: bool = False
    sumdb: str = ""
    key: str = ""
    enabled: bool = True
    private: bool = False
    allowed_users: frozenset[int] = frozenset()  # user ids (private upstreams)
    allowed_groups: frozenset[int] = frozenset()  # group ids (private upstreams)

    def credentials(self) -> tuple[str, str] | None:
        """User and password, from the environment variables named or the stored values."""
        user = os.environ.get(self.username_env, "") if self.username_env else self.username
        password = os.environ.get(self.password_env, "") if self.password_env else self.password
        return (user, password) if user or password else None

    def __repr__(self) -> str:  # never show credentials, even in tracebacks
        return f"UpstreamInfo({self.name!r}, {self.kind!r}, {self.url!r})"


_lock = threading.Lock()
# (loaded at, every upstream, the enabled ones), in configured order.
_snapshot: tuple[float, list[UpstreamInfo], list[UpstreamInfo]] = (0.0, [], [])


def _all(*, include_disabled: bool) -> list[UpstreamInfo]:
    """Upstreams in configured order (the snapshot, refreshed every few seconds)."""
    loaded_at, everything, enabled = _snapshot
    if time.monotonic() - loaded_at >= settings.MIRROR_UPSTREAM_CACHE_SECONDS:
        everything, enabled = _load()
    return everything if include_disabled else enabled


def _allowed(through: type[models.Model], column: str) -> dict[int, frozenset[int]]:
    """upstream id -> the ids in `column` of a many-to-many table (one query)."""
    found: dict[int, set[int]] = {}
    for upstream_id, other in through.objects.values_list("upstream_id", column):
        found.setdefault(upstream_id, set()).add(other)
    return {k: frozenset(v) for k, v in found.items()}


def _load() -> tuple[list[UpstreamInfo], list[UpstreamInfo]]:
    global _snapshot
    with _lock:
        users = _allowed(Upstream.allowed_users.through, "user_id")
        groups = _allowed(Upstream.allowed_groups.through, "group_id")
        items = [
            UpstreamInfo(
                id=u.id,
                name=u.name,
                kind=u.kind,
                url=u.url.rstrip("/"),
                prefix=u.prefix,
                is_default=u.is_default,
                tag_ttl=u.tag_ttl,
                stale_max_age=u.stale_max_age,
                username=u.username,
                password=u.password,
                username_env=u.username_env,
                password_env=u.password_env,
                updated=u.updated.timestamp(),
                modules=tuple(u.modules or ()),
                verify_sums=u.verify_sums,
                fall_through=u.fall_through,
                sumdb=u.sumdb,
                key=u.key,
                enabled=u.enabled,
                private=u.private,
                allowed_users=users.get(u.id, frozenset()),
                allowed_groups=groups.get(u.id, frozenset()),
            )
            for u in Upstream.objects.all()
        ]
        enabled = [u for u in items if u.enabled]
        _snapshot = (time.monotonic(), items, enabled)
    return items, enabled


def all_upstreams() -> list[UpstreamInfo]:
    """Enabled upstreams in configured order (cached for a few seconds)."""
    return _all(include_disabled=False)


def upstreams_of_kind(kind: str, *, include_disabled: bool = False) -> list[UpstreamInfo]:
    """Upstreams of `kind`, enabled ones only unless `include_disabled` (a disabled private Go
    upstream still owns its module patterns)."""
    return [u for u in _all(include_disabled=include_disabled) if u.kind == kind]


def forget() -> None:
    """Drop the snapshot (after a configuration change in this process)."""
    global _snapshot
    _snapshot = (0.0, [], [])
