"""The OCI distribution API, pull side: parse, call the core, map errors.

One entry point dispatches on the path, because repository names contain slashes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from mirror.errors import (
    DigestMismatch,
    InvalidContent,
    UpstreamDenied,
    UpstreamError,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from mirror.responses import IMMUTABLE, RangeNotSatisfiable, content_response

from . import blobs, catalog, manifests
from .errors import API_VERSION, RegistryError
from .names import check_digest, check_name, check_reference, is_digest
from .routing import Route, route

log = logging.getLogger(__name__)

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?P<name>.+)/manifests/(?P<reference>[^/]+)$"), "manifest"),
    (re.compile(r"^(?P<name>.+)/blobs/uploads(?:/.*)?$"), "upload"),
    (re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$"), "blob"),
    (re.compile(r"^(?P<name>.+)/tags/list$"), "tags"),
]
TAG_TTL_CACHE_CONTROL = "no-cache"


@csrf_exempt
def v2(request: HttpRequest, path: str = "") -> HttpResponse:
    try:
        response = _dispatch(request, path)
    except RegistryError as e:
        response = e.response()
    except UpstreamError as e:
        response = _upstream_error(e).response()
    except (DigestMismatch, InvalidContent) as e:
        # The upstream's bytes failed verification before any reached the client.
        response = RegistryError("DIGEST_INVALID", f"upstream content refused: {e}", status=502)
        response = response.response()
    response[API_VERSION[0]] = API_VERSION[1]
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return RegistryError("UNSUPPORTED", "unknown endpoint", status=404).response()


def _dispatch(request: HttpRequest, path: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        raise RegistryError("UNSUPPORTED", "this mirror is read-only")
    if path == "":
        return JsonResponse({})
    if path == "_catalog":
        return catalog.catalog_response(request)
    for pattern, kind in _ROUTES:
        if match := pattern.match(path):
            return _HANDLERS[kind](request, **match.groupdict())
    raise RegistryError("UNSUPPORTED", "unknown endpoint", {"path": path[:300]}, status=404)


def _route(request: HttpRequest, name: str) -> Route:
    """The route of an already validated name (the handlers check names first)."""
    return route(name, request.GET.get("ns") or None)


def manifest(request: HttpRequest, name: str, reference: str) -> HttpResponse:
    check_name(name)
    check_reference(reference)
    accept = [
        part.split(";")[0].strip()
        for part in request.headers.get("Accept", "").split(",")
        if part.strip()
    ]
    head = request.method == "HEAD"
    answer = manifests.get_manifest(_route(request, name), reference, accept, head)
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


def tags(request: HttpRequest, name: str) -> HttpResponse:
    check_name(name)
    n = request.GET.get("n")
    if n is not None and not (n.isdigit() and 0 < int(n) <= 10000):
        raise RegistryError("PAGINATION_NUMBER_INVALID", "n must be between 1 and 10000")
    last = request.GET.get("last") or None
    if last is not None:
        check_reference(last)
    page = catalog.list_tags(_route(request, name), int(n) if n else None, last)
    response = JsonResponse({"name": name, "tags": page.tags})
    if page.next_last is not None:
        query = urlencode({"n": n or len(page.tags), "last": page.next_last})
        response["Link"] = f'</v2/{name}/tags/list?{query}>; rel="next"'
    response["X-Cache"] = page.cache
    response["Cache-Control"] = TAG_TTL_CACHE_CONTROL
    return response


def _upstream_error(e: UpstreamError) -> RegistryError:
    if isinstance(e, UpstreamNotFound):
        return RegistryError("NAME_UNKNOWN", "not found upstream")
    if isinstance(e, UpstreamDenied):
        # Docker Hub answers 401 for repositories that do not exist: to a client this is
        # "unknown", not a prompt to log in to the mirror.
        return RegistryError("NAME_UNKNOWN", "the upstream refused access to this repository")
    assert isinstance(e, UpstreamUnavailable)
    if e.retry_after:
        error = RegistryError("TOOMANYREQUESTS", "upstream is rate-limiting; retry later")
        return error
    return RegistryError("UNAVAILABLE", f"upstream unavailable: {e}")


_HANDLERS: dict[str, Callable[..., HttpResponse]] = {
    "manifest": manifest,
    "blob": blob,
    "tags": tags,
    "upload": upload,
}
