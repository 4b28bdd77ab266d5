"""Error answers Django itself gives (bad request, unhandled exception), in each protocol's format.

Clients of this service are registries' and the go command's clients, never browsers: an OCI
path gets the distribution error envelope, a GOPROXY or checksum-database path plain text,
anything else JSON. Never Django's HTML pages.
"""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse, JsonResponse

from registries.errors import RegistryError

# The Go routes of config/urls.py: `.../@v/...`, `.../@latest`, `/sumdb/...`.
_GO_PATH = re.compile(r"^/(?:sumdb/.|.+/(?:@v/[^/]+|@latest)$)")


def _answer(request: HttpRequest, status: int, message: str) -> HttpResponse:
    path = request.path_info
    if path == "/v2" or path.startswith("/v2/"):
        return RegistryError("UNKNOWN", message, status=status).response()
    if _GO_PATH.match(path):
        return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    return JsonResponse({"error": message}, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: input Django refuses before any view (e.g. more than 1000 query fields)."""
    return _answer(request, 400, "bad request")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: an unhandled exception; Django has logged it with its traceback."""
    return _answer(request, 500, "internal server error")
