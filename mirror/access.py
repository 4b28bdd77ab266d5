"""Who is pulling, and whether they may pull from an upstream: access control for both
protocols.

A request's `Authorization` header identifies its client:
- none: anonymous;
- `Basic USER:PULLTOKEN`: a live pull token of that user (mirror.PullToken, found by SHA-256);
  at the token endpoint only, `Basic USER:PASSWORD` (the Django user's password) too;
- `Bearer TOKEN`: a token this mirror issued (`issue`): signed with SECRET_KEY, carrying the
  user id (none for anonymous clients) and an expiry; nothing about it is stored.
Anything else (an unknown, revoked or expired token, another user's token, an inactive user, a
malformed header) is InvalidCredentials, which the protocols answer with 401.

Cost on the request path: an anonymous request costs a dictionary lookup; a known credential is
remembered in this process for IDENTITY_SECONDS (with the user's groups), so that a warm pull
makes no query; a revoked token or a changed membership applies within that time. Whether an
upstream is private, and who may pull it, comes with the per-process upstream snapshot
(mirror/upstreams.py): a public upstream costs nothing to check.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.http import HttpRequest

from . import tokens
from .memo import Memo
from .upstreams import UpstreamInfo

IDENTITY_SECONDS = 5
MAX_HEADER = 4096  # longer Authorization headers are refused unread
_SALT = "entrepot.pull-token"
_identities = Memo(10_000)


@dataclass(frozen=True)
class Identity:
    """A client: a user with their groups, or anonymous (`user_id` None)."""

    user_id: int | None = None
    username: str = ""
    superuser: bool = False
    group_ids: frozenset[int] = frozenset()

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


ANONYMOUS = Identity()


class InvalidCredentials(Exception):
    """Credentials were sent and are not valid (the message says why, never what was sent)."""


def identify(request: HttpRequest, *, passwords: bool = False) -> Identity:
    """The client of `request`; `passwords` also accepts a user's password in Basic (slow by
    design: only for the token endpoint, where a client goes once per token lifetime).

    Raises:
        InvalidCredentials: an Authorization header that identifies no one.
    """
    header = request.META.get("HTTP_AUTHORIZATION")
    if not header:
        return ANONYMOUS
    if len(header) > MAX_HEADER:
        raise InvalidCredentials("authorization header too long")
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        return _basic(value.strip(), passwords)
    if scheme == "bearer":
        return _bearer(value.strip())
    raise InvalidCredentials("unsupported authorization scheme")


def may_pull(identity: Identity, upstream: UpstreamInfo) -> bool:
    """Public upstreams: anyone. Private ones: superusers, the allowed users and the members of
    the allowed groups."""
    if not upstream.private:
        return True
    if identity.user_id is None:
        return False
    return (
        identity.superuser
        or identity.user_id in upstream.allowed_users
        or not identity.group_ids.isdisjoint(upstream.allowed_groups)
    )


def issue(identity: Identity) -> tuple[str, int]:
    """A Bearer token for `identity`, and its lifetime in seconds."""
    lifetime = settings.MIRROR_PULL_TOKEN_SECONDS
    payload = {"u": identity.user_id, "e": int(time.time()) + lifetime}
    return signing.Signer(salt=_SALT).sign_object(payload, compress=False), lifetime


def _basic(value: str, passwords: bool) -> Identity:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCredentials("malformed Basic credentials") from None
    username, colon, secret = decoded.partition(":")
    if not (colon and username and secret):
        raise InvalidCredentials("malformed Basic credentials")
    if tokens.is_pull_token(secret):
        return _pull_token(username, secret)
    if passwords:
        user = authenticate(username=username, password=secret)
        if user is not None and user.is_active:
            return _identity_of(user)
    raise InvalidCredentials("invalid user name or token")


def _pull_token(username: str, secret: str) -> Identity:
    key = ("basic", username, tokens.digest(secret))
    if (known := _identities.get(key)) is not None:
        return known
    row = tokens.lookup_pull_token(secret)
    if row is None or row.user.get_username() != username or not row.user.is_active:
        raise InvalidCredentials("invalid user name or token")
    identity = _identity_of(row.user)
    seconds = IDENTITY_SECONDS
    if row.expires is not None:
        seconds = min(seconds, row.expires.timestamp() - time.time())
    _identities.put(key, identity, seconds)
    return identity


def _bearer(token: str) -> Identity:
    key = ("bearer", token)
    if (known := _identities.get(key)) is not None:
        return known
    try:
        payload = signing.Signer(salt=_SALT).unsign_object(token)
        user_id, expires = payload["u"], payload["e"]
    except (signing.BadSignature, TypeError, KeyError, ValueError):
        raise InvalidCredentials("invalid token") from None
    left = expires - time.time() if isinstance(expires, int) else 0
    if left <= 0:
        raise InvalidCredentials("token expired")
    if user_id is None:
        identity = ANONYMOUS
    else:
        user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
        if user is None:
            raise InvalidCredentials("invalid token")
        identity = _identity_of(user)
    _identities.put(key, identity, min(IDENTITY_SECONDS, left))
    return identity


def _identity_of(user: AbstractBaseUser) -> Identity:
    groups = frozenset(user.groups.values_list("id", flat=True))
    return Identity(user.pk, user.get_username(), user.is_superuser, groups)


def forget() -> None:
    """Drop remembered identities (after a change made in this process, and in tests)."""
    _identities.clear()
