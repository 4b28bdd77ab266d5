"""Client authentication on the OCI API, as registries do it (Docker's token authentication).

A client without credentials that needs them gets 401 with the challenge
`WWW-Authenticate: Bearer realm="<this host>/token",service="entrepot",scope="repository:N:pull"`:
it asks the token endpoint (`GET /token`, with Basic USER:PULLTOKEN or USER:PASSWORD, or
nothing) for a short-lived token and sends it as `Authorization: Bearer` (mirror/access.py).
Clients also log in this way (`podman login` reads the challenge of `GET /v2/`), so `/v2/`
challenges anonymous clients whenever some OCI upstream is private; with none, it answers them
200 and no client needs a token.

Access is decided per request from the token's user, whatever scope the token was asked for:
a token names who the client is, not what it may pull.
"""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from mirror import access, ratelimit
from mirror.errors import UpstreamNotFound
from mirror.upstreams import UpstreamInfo, upstreams_of_kind

from .errors import RegistryError

SERVICE = "entrepot"


class Unauthorized(RegistryError):
    """401 UNAUTHORIZED with the Bearer challenge that sends the client to the token endpoint."""

    def __init__(self, request: HttpRequest, message: str, name: str | None = None) -> None:
        detail = [{"Type": "repository", "Name": name, "Action": "pull"}] if name else None
        super().__init__("UNAUTHORIZED", message, detail)
        realm = request.build_absolute_uri("/token")
        self.challenge = f'Bearer realm="{realm}",service="{SERVICE}"'
        if name:
            self.challenge += f',scope="repository:{name}:pull"'

    def response(self) -> JsonResponse:
        response = super().response()
        response["WWW-Authenticate"] = self.challenge
        return response


def client(request: HttpRequest, name: str | None) -> access.Identity:
    """The client of a `/v2/` request (`name`: the repository it names, if any), counted
    against its rate limit.

    Raises:
        Unauthorized: credentials were sent and are not valid.
        RegistryError: TOOMANYREQUESTS, the client is over its rate limit.
    """
    try:
        identity = access.identify(request)
    except access.InvalidCredentials as e:
        _limit(request, access.ANONYMOUS)
        raise Unauthorized(request, str(e), name) from None
    _limit(request, identity)
    return identity


def check_base(request: HttpRequest, identity: access.Identity) -> None:
    """`GET /v2/`: clients that sent no credentials are challenged when some OCI upstream is
    private, so that clients with credentials for this mirror use them (they only do after a
    challenge); an anonymous token is an answer to the challenge, and is let in."""
    sent = "HTTP_AUTHORIZATION" in request.META
    if identity.anonymous and not sent and any(u.private for u in upstreams_of_kind("oci")):
        raise Unauthorized(request, "authentication required")


def check_pull(
    request: HttpRequest, identity: access.Identity, upstream: UpstreamInfo, name: str
) -> None:
    """Refuse a pull of `name` (served by `upstream`) that the client may not make: anonymous
    clients are challenged; others get what a name that does not exist gets (UpstreamNotFound,
    mapped by the view), so that nothing tells them what the upstream holds."""
    if access.may_pull(identity, upstream):
        return
    if identity.anonymous:
        raise Unauthorized(request, "authentication required", name)
    raise UpstreamNotFound("not allowed")


def _limit(request: HttpRequest, identity: access.Identity) -> None:
    if (wait := ratelimit.retry_after(request, identity)) is not None:
        raise RegistryError("TOOMANYREQUESTS", "too many requests", retry_after=wait)


@csrf_exempt
@never_cache
def token(request: HttpRequest) -> HttpResponse:
    """`GET /token?service=entrepot&scope=repository:NAME:pull`: a Bearer token for the client
    its Basic credentials name (a user's pull token or password), or an anonymous one."""
    try:
        if request.method not in ("GET", "HEAD"):
            raise RegistryError("UNSUPPORTED", "use GET")
        try:
            identity = access.identify(request, passwords=True)
        except access.InvalidCredentials as e:
            _limit(request, access.ANONYMOUS)
            error = RegistryError("UNAUTHORIZED", str(e)).response()
            error["WWW-Authenticate"] = f'Basic realm="{SERVICE}"'
            return error
        _limit(request, identity)
    except RegistryError as e:
        return e.response()
    issued, lifetime = access.issue(identity)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return JsonResponse(
        {
            "token": issued,
            "access_token": issued,
            "expires_in": lifetime,
            "issued_at": now.isoformat().replace("+00:00", "Z"),
        }
    )
