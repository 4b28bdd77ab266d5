"""Client authentication on the GOPROXY paths.

The go command sends `Authorization: Basic USER:TOKEN` from the userinfo of
`GOPROXY=https://USER:TOKEN@host` or from `~/.netrc` (go 1.19 sends neither over plain http).
A module of a private upstream (mirror/access.py) is answered 401 with a Basic challenge to
anonymous clients, and, to clients that may not pull it, exactly as a module that does not
exist: 404 with the "not found" text a fresh miss at its upstream gets.
"""

from __future__ import annotations

from django.http import HttpRequest

from mirror import access, ratelimit
from mirror.errors import UpstreamNotFound
from mirror.upstreams import upstreams_of_kind

from . import chain

CHALLENGE = {"WWW-Authenticate": 'Basic realm="entrepot"'}


class Refused(Exception):
    """An answer instead of the content: 401 (credentials) or 429 (rate limit)."""

    def __init__(self, status: int, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def client(request: HttpRequest, *, challenge: bool = True) -> access.Identity:
    """The client, counted against its rate limit. Invalid credentials are refused with 401,
    unless not `challenge` (the public checksum-database paths): then the client is counted
    as anonymous.

    Raises:
        Refused: invalid credentials, or over the rate limit.
    """
    try:
        identity = access.identify(request)
    except access.InvalidCredentials as e:
        if challenge:
            _limit(request, access.ANONYMOUS)
            raise Refused(401, f"unauthorized: {e}", CHALLENGE) from None
        identity = access.ANONYMOUS
    _limit(request, identity)
    return identity


def check_module(identity: access.Identity, module: str) -> None:
    """Refuse a module the client may not pull, before any cache or upstream is consulted.

    Raises:
        Refused: 401, an anonymous client asks for a private module.
        UpstreamNotFound: a client that may not pull it (as if it did not exist).
    """
    if identity.anonymous and not any(
        u.private for u in upstreams_of_kind("go", include_disabled=True)
    ):
        return
    route = chain.route(module)
    guarded = chain.private_owners(module) if route.private else list(route.upstreams)
    if all(access.may_pull(identity, u) for u in guarded):
        return
    if identity.anonymous:
        raise Refused(401, "unauthorized: authentication required", CHALLENGE)
    if not route.upstreams:
        raise UpstreamNotFound(f"no enabled upstream serves {module}")
    # The text mirror.http gives a 404 of the last upstream the chain asks.
    raise UpstreamNotFound(f"{route.upstreams[-1].name}: 404")


def _limit(request: HttpRequest, identity: access.Identity) -> None:
    if (wait := ratelimit.retry_after(request, identity)) is not None:
        seconds = str(max(1, int(wait + 0.999)))
        raise Refused(429, "too many requests", {"Retry-After": seconds})
