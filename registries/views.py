"""The OCI distribution API, pull side: parse, call the core, map errors.

One entry point dispatches on the path, because repository names contain slashes. Services
raise the core's domain errors; `_domain_error` maps them to OCI error answers, once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from mirror import access
from mirror.errors import (
    DATABASE_DOWN,
    DigestMismatch,
    InvalidContent,
    MirrorError,
    Overloaded,
    ServiceUnavailable,
    StorageFull,
    UpstreamDenied,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
    database_unavailable,
)
from mirror.responses import IMMUTABLE, RangeNotSatisfiable, content_response

from . import auth, blobs, catalog, manifests, referrers, tags
from .errors import API_VERSION, RegistryError
from .formats import OCI_INDEX
from .names import check_digest, check_name, check_reference, check_tag, is_digest
from .routing import Route, route

log = logging.getLogger(__name__)

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?P<name>.+)/manifests/(?P<reference>[^/]+)$"), "manifest"),
    (re.compile(r"^(?P<name>.+)/blobs/uploads(?:/.*)?$"), "upload"),
    (re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$"), "blob"),
    (re.compile(r"^(?P<name>.+)/tags/list$"), "tags"),
    (re.compile(r"^(?P<name>.+)/referrers/(?P<digest>[^/]+)$"), "referrers"),
]
TAG_TTL_CACHE_CONTROL = "no-cache"
# What "not found upstream" means on each endpoint; others say the repository is unknown.
_NOT_FOUND = {
    "manifest": ("MANIFEST_UNKNOWN", "manifest unknown"),
    "blob": ("BLOB_UNKNOWN", "blob unknown"),
}


@csrf_exempt
def v2(request: HttpRequest, path: str = "") -> HttpResponse:
    kind = ""
    try:
        if request.method not in ("GET", "HEAD"):
            raise RegistryError("UNSUPPORTED", "this mirror is read-only")
        kind, handler, params = _resolve(path)
        # Who the client is, before any cache or upstream is consulted; `_route` checks it.
        request.mirror_identity = auth.client(request, params.get("name"))  # type: ignore[attr-defined]
        response = handler(request, **params)
    except RegistryError as e:
        response = e.response()
    except (MirrorError, catalog.UnknownName) as e:
        response = _domain_error(e, kind).response()
    except DATABASE_DOWN as e:
        response = _domain_error(database_unavailable(e), kind).response()
    response[API_VERSION[0]] = API_VERSION[1]
    return response  # config.middleware strips the body of answers to HEAD


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return RegistryError("UNSUPPORTED", "unknown endpoint", status=404).response()


def _resolve(path: str) -> tuple[str, Callable[..., HttpResponse], dict[str, str]]:
    if path == "":
        return "base", base, {}
    if path == "_catalog":
        return "catalog", catalog_view, {}
    for pattern, kind in _ROUTES:
        if match := pattern.match(path):
            return kind, _HANDLERS[kind], match.groupdict()
    raise RegistryError("UNSUPPORTED", "unknown endpoint", {"path": path[:300]}, status=404)


def _domain_error(e: Exception, kind: str) -> RegistryError:
    """The OCI error answer for a core error raised while serving endpoint `kind`."""
    if isinstance(e, (UpstreamNotFound, catalog.UnknownName)):
        code, message = _NOT_FOUND.get(kind, ("NAME_UNKNOWN", "repository not known upstream"))
        return RegistryError(code, message)
    if isinstance(e, UpstreamDenied):
        # Docker Hub answers 401 for repositories that do not exist: to a client this is
        # "unknown", not a prompt to log in to the mirror.
        return RegistryError("NAME_UNKNOWN", "the upstream refused access to this repository")
    if isinstance(e, UpstreamInvalid):
        code = "MANIFEST_INVALID" if kind == "manifest" else "UNAVAILABLE"
        return RegistryError(code, f"upstream answer refused: {e}", status=502)
    if isinstance(e, UpstreamUnavailable) and e.retry_after:
        message = "upstream is rate-limiting; retry later"
        return RegistryError("TOOMANYREQUESTS", message, retry_after=e.retry_after)
    if isinstance(e, UpstreamUnavailable):
        return RegistryError("UNAVAILABLE", f"upstream unavailable: {e}")
    if isinstance(e, Overloaded):
        return RegistryError("UNAVAILABLE", "mirror busy", retry_after=e.retry_after)
    if isinstance(e, ServiceUnavailable):  # the mirror's own database or storage
        return RegistryError("UNAVAILABLE", str(e), retry_after=e.retry_after)
    if isinstance(e, StorageFull):
        return RegistryError("UNAVAILABLE", "mirror storage is full", status=507)
    if isinstance(e, (DigestMismatch, InvalidContent)):
        # The upstream's bytes failed verification before any reached the client.
        return RegistryError("DIGEST_INVALID", f"upstream content refused: {e}", status=502)
    log.error("unmapped mirror error on %s: %r", kind, e)
    return RegistryError("UNAVAILABLE", f"upstream error: {e}", status=502)


def _route(request: HttpRequest, name: str) -> Route:
    """The route of an already validated name (the handlers check names first); its upstream
    labels the request's metrics (config/observability.py)."""
    target = route(name, request.GET.get("ns") or None)
    request.mirror_upstream = target.upstream.name  # type: ignore[attr-defined]
    auth.check_pull(request, request.mirror_identity, target.upstream, name)  # type: ignore[attr-defined]
    return target


def _page_size(request: HttpRequest) -> int | None:
    try:
        return catalog.page_size(request.GET.get("n"))
    except ValueError as e:
        raise RegistryError("PAGINATION_NUMBER_INVALID", str(e)) from None


def base(request: HttpRequest) -> HttpResponse:
    auth.check_base(request, request.mirror_identity)  # type: ignore[attr-defined]
    return JsonResponse({})


def manifest(request: HttpRequest, name: str, reference: str) -> HttpResponse:
    check_name(name)
    check_reference(reference)
    accept = [
        part.split(";")[0].strip()
        for part in request.headers.get("Accept", "").split(",")
        if part.strip()
    ]
    head = request.method == "HEAD"
    target = _route(request, name)
    if is_digest(reference):
        answer = manifests.by_digest(target, reference, head)
    else:
        answer = tags.by_tag(target, reference, accept, head)
    response = HttpResponse(answer.body or b"", content_type=answer.media_type)
    response["Content-Length"] = str(answer.size)
    response["Docker-Content-Digest"] = answer.digest
    response["Etag"] = f'"{answer.digest}"'
    response["X-Cache"] = answer.cache
    response["Cache-Control"] = IMMUTABLE if is_digest(reference) else TAG_TTL_CACHE_CONTROL
    return response


def blob(request: HttpRequest, name: str, digest: str) -> HttpResponse:
    check_name(name)
    check_digest(digest)
    target = _route(request, name)
    if request.method == "HEAD":
        head = blobs.head_blob(target, digest)
        response = HttpResponse(content_type="application/octet-stream")
        response["Content-Length"] = str(head.size)
        response["X-Cache"] = head.cache
    else:
        content = blobs.get_blob(target, digest)
        try:
            response = content_response(request, content, "application/octet-stream")
        except RangeNotSatisfiable as e:
            raise RegistryError(
                "RANGE_INVALID", "range not satisfiable", {"size": e.size}
            ) from None
    response["Docker-Content-Digest"] = digest
    response["Etag"] = f'"{digest}"'
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = IMMUTABLE
    return response


def upload(request: HttpRequest, name: str) -> HttpResponse:
    raise RegistryError("UNSUPPORTED", "this mirror is read-only")


def tags_view(request: HttpRequest, name: str) -> HttpResponse:
    check_name(name)
    n = _page_size(request)
    last = request.GET.get("last") or None
    if last is not None:
        check_tag(last)
    page = catalog.list_tags(_route(request, name), n, last)
    response = JsonResponse({"name": name, "tags": page.items})
    if page.next_last is not None:
        query = urlencode({"n": n or len(page.items), "last": page.next_last})
        response["Link"] = f'</v2/{name}/tags/list?{query}>; rel="next"'
    response["X-Cache"] = page.cache
    response["Cache-Control"] = TAG_TTL_CACHE_CONTROL
    return response


def catalog_view(request: HttpRequest) -> HttpResponse:
    n = _page_size(request)
    identity = request.mirror_identity  # type: ignore[attr-defined]
    # A name this mirror gave (the last of a page) or none: on PostgreSQL a NUL in a query
    # parameter is an error of the driver, not an empty page.
    last = request.GET.get("last") or None
    page = catalog.catalog(n, last and check_name(last), lambda u: access.may_pull(identity, u))
    response = JsonResponse({"repositories": page.items})
    if page.next_last is not None:
        query = urlencode({"n": n, "last": page.next_last})
        response["Link"] = f'</v2/_catalog?{query}>; rel="next"'
    return response


def referrers_view(request: HttpRequest, name: str, digest: str) -> HttpResponse:
    check_name(name)
    check_digest(digest)
    artifact_type = request.GET.get("artifactType")
    found = referrers.get_referrers(_route(request, name), digest, artifact_type)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found.descriptors}
    response = JsonResponse(index, content_type=OCI_INDEX)
    if artifact_type is not None:
        response["OCI-Filters-Applied"] = "artifactType"
    response["X-Cache"] = found.cache
    response["Cache-Control"] = TAG_TTL_CACHE_CONTROL
    return response


_HANDLERS: dict[str, Callable[..., HttpResponse]] = {
    "manifest": manifest,
    "blob": blob,
    "tags": tags_view,
    "upload": upload,
    "referrers": referrers_view,
}
