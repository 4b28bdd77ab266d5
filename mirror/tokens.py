"""API tokens: random, shown once, stored as their SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets

from django.utils import timezone

from .models import ApiToken

PREFIX = "ent_"
SCOPES = ("read", "prewarm", "admin")
# A scope includes those before it: a prewarm token may read, an admin token may do anything.
IMPLIED = {"read": {"read"}, "prewarm": {"read", "prewarm"}, "admin": set(SCOPES)}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(name: str, scopes: list[str]) -> tuple[ApiToken, str]:
    """A new token named `name`; returns the row and the token (never stored)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        name=name, prefix=token[:8], digest=_digest(token), scopes=sorted(set(scopes))
    )
    return row, token


def lookup(token: str) -> ApiToken | None:
    """The live token row for a presented token, or None; records its use."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = ApiToken.objects.filter(digest=_digest(token), revoked=False).first()
    if row is not None:
        now = timezone.now()
        if row.last_used is None or (now - row.last_used).total_seconds() > 60:
            ApiToken.objects.filter(pk=row.pk).update(last_used=now)
    return row


def granted(scopes: list[str]) -> set[str]:
    return set().union(*(IMPLIED.get(s, set()) for s in scopes))
