"""Tokens: random, shown once, stored as their SHA-256 only.

Two kinds share this: REST API tokens (ApiToken, `ent_…`, scoped) and users' pull tokens
(PullToken, `entp_…`, the password of `docker login` or of `GOPROXY=https://USER:TOKEN@host`).
A plain SHA-256 is enough for 256-bit random secrets (no dictionary to guard against), and it
lets a presented token be found with one indexed lookup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import ApiToken, PullToken

PREFIX = "ent_"
PULL_PREFIX = "entp_"
MAX_LENGTH = 200  # longer presented tokens are refused unhashed
SCOPES = ("read", "prewarm", "admin")
# A scope includes those before it: a prewarm token may read, an admin token may do anything.
IMPLIED = {"read": {"read"}, "prewarm": {"read", "prewarm"}, "admin": set(SCOPES)}
LAST_USED_EVERY = 60  # seconds: `last_used` is written at most this often per token


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new(prefix: str) -> tuple[str, str, str]:
    """A new secret: (token, its first 8 characters, its digest)."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token[:8], digest(token)


def _mark_used(model: type[ApiToken] | type[PullToken], row: ApiToken | PullToken) -> None:
    now = timezone.now()
    if row.last_used is None or (now - row.last_used).total_seconds() > LAST_USED_EVERY:
        model.objects.filter(pk=row.pk).update(last_used=now)


def _looks_like(token: str, prefix: str) -> bool:
    return token.startswith(prefix) and len(token) <= MAX_LENGTH


def create(name: str, scopes: list[str]) -> tuple[ApiToken, str]:
    """A new API token named `name`; returns the row and the token (never stored)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
    token, prefix, hashed = _new(PREFIX)
    row = ApiToken.objects.create(
        name=name, prefix=prefix, digest=hashed, scopes=sorted(set(scopes))
    )
    return row, token


def lookup(token: str) -> ApiToken | None:
    """The live API token row for a presented token, or None; records its use."""
    if not _looks_like(token, PREFIX):
        return None
    row = ApiToken.objects.filter(digest=digest(token), revoked=False).first()
    if row is not None:
        _mark_used(ApiToken, row)
    return row


def granted(scopes: list[str]) -> set[str]:
    return set().union(*(IMPLIED.get(s, set()) for s in scopes))


def new_pull_secret(row: PullToken) -> str:
    """Give an unsaved pull token row its secret; returns the token (never stored)."""
    token, row.prefix, row.digest = _new(PULL_PREFIX)
    return token


def create_pull_token(
    user: AbstractBaseUser, name: str, expires: dt.datetime | None = None
) -> tuple[PullToken, str]:
    """A new pull token of `user`; returns the row and the token (never stored)."""
    row = PullToken(user=user, name=name, expires=expires)
    token = new_pull_secret(row)
    row.save()
    return row, token


def is_pull_token(token: str) -> bool:
    return _looks_like(token, PULL_PREFIX)


def lookup_pull_token(token: str) -> PullToken | None:
    """The live (not revoked, not expired) pull token row for a presented token, with its
    user, or None; records its use."""
    if not is_pull_token(token):
        return None
    row = (
        PullToken.objects.select_related("user").filter(digest=digest(token), revoked=False).first()
    )
    if row is None or (row.expires is not None and row.expires <= timezone.now()):
        return None
    _mark_used(PullToken, row)
    return row
