"""Who is calling the API, and what they may do.

`Authorization: Bearer TOKEN` (an ApiToken) or the admin's session of a staff user (who has
every scope). Views name the scope an action needs in `required_scopes` (a dict from action or
HTTP method to scope; default: "read" for safe methods, "admin" otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from .. import tokens

REALM = 'Bearer realm="entrepot-api"'


@dataclass
class Caller:
    """The authenticated caller: a token's name, or an admin user."""

    name: str
    scopes: set[str] = field(default_factory=set)
    is_authenticated: bool = True

    def __str__(self) -> str:
        return self.name


class TokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Caller, Any] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("malformed Bearer authorization")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("malformed Bearer token") from None
        row = tokens.lookup(token)
        if row is None:
            raise exceptions.AuthenticationFailed("unknown or revoked token")
        return Caller(f"token:{row.name}", tokens.granted(row.scopes)), row

    def authenticate_header(self, request: Request) -> str:
        return REALM


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """A staff user logged in to the admin: every scope (unsafe methods need the CSRF token)."""

    def authenticate(self, request: Request) -> tuple[Caller, Any] | None:
        result = super().authenticate(request)
        if result is None or not result[0].is_staff:
            return None
        user = result[0]
        return Caller(f"user:{user.get_username()}", set(tokens.SCOPES)), None


def required_scope(method: str, view: Any) -> str:
    """The scope `method` on `view` needs: the view's `required_scopes` by action, then by
    method; else "read" for safe methods and "admin" for the others. The OpenAPI schema
    (mirror/api/schema.py) asks the same question."""
    scopes = getattr(view, "required_scopes", {})
    action = getattr(view, "action", None)
    if action in scopes:
        return scopes[action]
    if method in scopes:
        return scopes[method]
    return "read" if method in permissions.SAFE_METHODS else "admin"


class HasScope(permissions.BasePermission):
    """401 without credentials, 403 when the caller's scopes lack the action's."""

    def has_permission(self, request: Request, view: Any) -> bool:
        caller = request.user
        if not isinstance(caller, Caller):
            raise exceptions.NotAuthenticated()
        needed = required_scope(request.method or "GET", view)
        if needed not in caller.scopes:
            raise exceptions.PermissionDenied(f"this action needs the {needed!r} scope")
        return True
