"""The GOPROXY protocol and the checksum-database proxy: parse, call the core, map errors.

Errors are plain text. 404/410 mean "not here" (the go command tries its next proxy); bad
input is 400; content the mirror refuses (checksum mismatch, broken zip) is 502, which stops
the go command instead of letting it fall through to a source that skips the check.
"""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from mirror.errors import (
    DigestMismatch,
    InvalidContent,
    MirrorError,
    UpstreamDenied,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from mirror.responses import IMMUTABLE, RangeNotSatisfiable, content_response

from . import chain, service, sumdb
from .paths import InvalidPath, UnknownVersion, check_module_path, check_version, unescape

_FILE = re.compile(r"^(?P<module>.+)/@v/(?P<version>[^/]+)\.(?P<ext>info|mod|zip)$")
_LIST = re.compile(r"^(?P<module>.+)/@v/list$")
_LATEST = re.compile(r"^(?P<module>.+)/@latest$")
_LOOKUP = re.compile(r"^lookup/(?P<module>[^@]+)@(?P<version>[^/@]+)$")
CONTENT_TYPES = {
    "info": "application/json",
    "mod": "text/plain; charset=utf-8",
    "zip": "application/zip",
}
LIST_CACHE_CONTROL = "public, max-age=60"


def _text(status: int, message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def _error(e: Exception) -> HttpResponse:
    if isinstance(e, UnknownVersion):
        return _text(404, f"not found: {e}")
    if isinstance(e, InvalidPath):
        return _text(400, f"bad request: {e}")
    if isinstance(e, UpstreamNotFound):
        return _text(404, f"not found: {e}")
    if isinstance(e, DigestMismatch | InvalidContent):
        return _text(502, f"refused: {e}")
    if isinstance(e, UpstreamDenied):
        return _text(502, f"upstream refused access: {e}")
    if isinstance(e, UpstreamUnavailable) and e.retry_after:
        return _text(429, f"upstream is rate-limiting: {e}")
    return _text(503, f"upstream unavailable: {e}")


def _module(escaped: str) -> str:
    return check_module_path(unescape(escaped))


@csrf_exempt
def goproxy(request: HttpRequest, path: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return _text(405, "method not allowed")
    try:
        response = _dispatch(request, path)
    except (InvalidPath, MirrorError) as e:
        return _error(e)
    return response


def _dispatch(request: HttpRequest, path: str) -> HttpResponse:
    if match := _FILE.match(path):
        module = _module(match["module"])
        version = check_version(module, unescape(match["version"]))
        ext = match["ext"]
        content = service.file(module, version, ext)
        try:
            return content_response(request, content, CONTENT_TYPES[ext])
        except RangeNotSatisfiable:
            return _text(416, "range not satisfiable")
    if match := _LIST.match(path):
        document = service.version_list(_module(match["module"]))
        return _document(document, "text/plain; charset=utf-8")
    if match := _LATEST.match(path):
        document = service.latest(_module(match["module"]))
        return _document(document, "application/json")
    return _text(404, "not found")


def _document(document, content_type: str) -> HttpResponse:
    response = HttpResponse(document.body, content_type=content_type)
    response["X-Cache"] = document.cache
    response["Cache-Control"] = LIST_CACHE_CONTROL
    return response


@csrf_exempt
def sumdb_proxy(request: HttpRequest, name: str, path: str) -> HttpResponse:
    """`/sumdb/NAME/supported|latest|lookup/...|tile/...` for configured databases only."""
    if request.method not in ("GET", "HEAD"):
        return _text(405, "method not allowed")
    db = sumdb.database(name)
    if db is None:
        return _text(404, f"checksum database {name[:100]!r} is not proxied here")
    if path == "supported":
        return _text(200, "")
    try:
        if match := _LOOKUP.match(path):
            module = _module(match["module"])
            check_version(module, unescape(match["version"]))
            if chain.is_private(module) and not chain.verifies_sums(module):
                return _text(404, "private module: not sent to the checksum database")
        elif not (path == "latest" or sumdb.TILE_PATH.match(path)):
            return _text(404, "not found")
        body, cache = sumdb.fetch(db, path)
    except (InvalidPath, MirrorError) as e:
        return _error(e)
    response = HttpResponse(body, content_type="text/plain; charset=utf-8")
    response["X-Cache"] = cache
    immutable = path.startswith("tile/") and ".p/" not in path
    response["Cache-Control"] = IMMUTABLE if immutable else LIST_CACHE_CONTROL
    return response
