"""The GOPROXY protocol and the checksum-database proxy: parse, call the core, map errors.

Errors are plain text (no body for HEAD). 404/410 mean "not here" (the go command tries its
next proxy); bad input is 400; content the mirror refuses (checksum mismatch, broken zip, an
upstream answer it does not accept) is 502, which stops the go command instead of letting it
fall through to a source that skips the check; 503 (with Retry-After when known) is "try
again", 507 a full cache.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from mirror.content import Content, MemoryContent
from mirror.errors import (
    DATABASE_DOWN,
    DigestMismatch,
    InvalidContent,
    MirrorError,
    Overloaded,
    StorageFull,
    UpstreamDenied,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
    database_unavailable,
)
from mirror.responses import IMMUTABLE, RangeNotSatisfiable, content_response, parse_range

from . import auth, chain, service, sumdb
from .paths import InvalidPath, UnknownVersion, check_module_path, check_version, unescape

_FILE = re.compile(r"^(?P<module>.+)/@v/(?P<version>[^/]+)\.(?P<ext>info|mod|zip)$")
_LIST = re.compile(r"^(?P<module>.+)/@v/list$")
_LATEST = re.compile(r"^(?P<module>.+)/@latest$")
_LOOKUP = re.compile(r"^lookup/(?P<module>[^@]+)@(?P<version>[^/@]+)$")
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
CONTENT_TYPES = {
    "info": JSON,
    "mod": "text/plain; charset=utf-8",
    "zip": "application/zip",
}
LIST_CACHE_CONTROL = "public, max-age=60"
# Errors -> (status, what the message starts with), most specific first.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (UnknownVersion, 404, "not found"),
    (InvalidPath, 400, "bad request"),
    (UpstreamNotFound, 404, "not found"),
    (DigestMismatch, 502, "refused"),
    (InvalidContent, 502, "refused"),
    (UpstreamInvalid, 502, "upstream answer refused"),
    (UpstreamDenied, 502, "upstream refused access"),
    (StorageFull, 507, "cache storage full"),
    (Overloaded, 503, "busy"),
    (UpstreamUnavailable, 503, "upstream unavailable"),
    (MirrorError, 503, "unavailable"),
]


def _text(status: int, message: str) -> HttpResponse:
    """A plain-text answer (config.middleware strips its body when it answers a HEAD)."""
    return HttpResponse(message + "\n", status=status, content_type=TEXT)


def _error(e: Exception) -> HttpResponse:
    status, what = next((s, w) for kind, s, w in _STATUS if isinstance(e, kind))
    response = _text(status, f"{what}: {e}")
    retry_after = getattr(e, "retry_after", None)
    if status == 503 and retry_after:
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _handled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """GET and HEAD only; the core's errors and bad input mapped once, here."""

    @csrf_exempt
    def wrapper(request: HttpRequest, *args: str, **kwargs: str) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            response = _text(405, "method not allowed")
            response["Allow"] = "GET, HEAD"
            return response
        try:
            return view(request, *args, **kwargs)
        except (InvalidPath, MirrorError) as e:
            return _error(e)
        except auth.Refused as e:
            response = _text(e.status, e.message)
            for header, value in e.headers.items():
                response[header] = value
            return response
        except DATABASE_DOWN as e:
            return _error(database_unavailable(e))
        except RangeNotSatisfiable as e:
            response = _text(416, "range not satisfiable")
            response["Content-Range"] = f"bytes */{e.size}"
            return response

    return wrapper


def _module(escaped: str) -> str:
    return check_module_path(unescape(escaped))


def _routed(request: HttpRequest, escaped: str) -> str:
    """The module of a GOPROXY path; its first upstream labels the request's metrics
    (config/observability.py)."""
    module = _module(escaped)
    upstreams = chain.route(module).upstreams
    request.mirror_upstream = upstreams[0].name if upstreams else ""  # type: ignore[attr-defined]
    return module


@_handled
def goproxy(request: HttpRequest, path: str) -> HttpResponse:
    identity = auth.client(request)  # checked below before any cache or upstream is consulted
    if match := _FILE.match(path):
        module = _routed(request, match["module"])
        version = check_version(module, unescape(match["version"]))
        auth.check_module(identity, module)
        ext = match["ext"]
        if ext == "zip":
            return _zip(request, service.zip_file(module, version))
        document = service.small_file(module, version, ext)
        return _immutable(request, document.body, document.cache, CONTENT_TYPES[ext])
    if match := _LIST.match(path):
        module = _routed(request, match["module"])
        auth.check_module(identity, module)
        document = service.version_list(module)
        return _answer(request, document.body, document.cache, TEXT, LIST_CACHE_CONTROL)
    if match := _LATEST.match(path):
        module = _routed(request, match["module"])
        auth.check_module(identity, module)
        document = service.latest(module)
        return _answer(request, document.body, document.cache, JSON, LIST_CACHE_CONTROL)
    return _text(404, "not found")


def _answer(
    request: HttpRequest, body: bytes, cache: str, content_type: str, cache_control: str
) -> HttpResponse:
    response = HttpResponse(b"" if request.method == "HEAD" else body, content_type=content_type)
    response["Content-Length"] = str(len(body))
    response["X-Cache"] = cache
    response["Cache-Control"] = cache_control
    return response


def _zip(request: HttpRequest, content: Content) -> HttpResponse:
    """A small committed zip comes in memory (service.SMALL_ZIP): FileResponse and sendfile
    cost more than the copy for the ~20 KB zips most modules have (a third of a warm `go mod
    download`'s serving time, by py-spy). Larger ones, and fills in progress, as any stored
    content."""
    if isinstance(content, MemoryContent):
        return _immutable(request, content.data, content.cache, CONTENT_TYPES["zip"])
    return content_response(request, content, CONTENT_TYPES["zip"])


def _immutable(request: HttpRequest, body: bytes, cache: str, content_type: str) -> HttpResponse:
    """An immutable body from memory, as a stored file is answered (Range, HEAD)."""
    wanted = parse_range(request.META.get("HTTP_RANGE", ""), len(body))
    part = body[wanted[0] : wanted[0] + wanted[1]] if wanted else body
    response = _answer(request, part, cache, content_type, IMMUTABLE)
    if wanted:
        response.status_code = 206
        response["Content-Range"] = f"bytes {wanted[0]}-{wanted[0] + wanted[1] - 1}/{len(body)}"
    response["Accept-Ranges"] = "bytes"
    return response


@_handled
def sumdb_proxy(request: HttpRequest, name: str, path: str) -> HttpResponse:
    """`/sumdb/NAME/supported|latest|lookup/...|tile/...` for configured databases only: public
    (private modules are never looked up), counted against the client's rate limit."""
    auth.client(request, challenge=False)
    db = sumdb.database(name)
    if db is None:
        return _text(404, f"checksum database {name[:100]!r} is not proxied here")
    request.mirror_upstream = db.name  # type: ignore[attr-defined]
    if path == "supported":
        return _text(200, "")
    if match := _LOOKUP.match(path):
        module = _module(match["module"])
        version = check_version(module, unescape(match["version"]))
        route = chain.route(module)
        if route.private and not route.verify_sums:
            return _text(404, "private module: not sent to the checksum database")
        body, cache = sumdb.lookup_answer(db, module, version)
        return _answer(request, body, cache, TEXT, LIST_CACHE_CONTROL)
    if path == "latest":
        body, cache = sumdb.latest(db)
        return _answer(request, body, cache, TEXT, LIST_CACHE_CONTROL)
    if path.startswith("tile/"):
        body, cache = sumdb.tile(db, path)
        immutable = ".p/" not in path and "/data/" not in path
        return _answer(request, body, cache, TEXT, IMMUTABLE if immutable else LIST_CACHE_CONTROL)
    return _text(404, "not found")
