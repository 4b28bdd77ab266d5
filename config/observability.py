"""Request ids, request metrics and the `/metrics` endpoint.

`observe` is the outermost middleware: it sees every answer as it leaves (after the HEAD body
is dropped), so the bytes it counts are those sent. It stays cheap for the warm paths (a few
microseconds: string comparisons, a dict lookup and two counter increments, no database, no
regular expression compiled per request).

- Request id: the client's `X-Request-ID` when it is a short safe token, else a new one; sent
  back in `X-Request-ID` and put on every log record made while the request is handled
  (`RequestIdFilter`, a handler filter in settings.LOGGING).
- Metrics: requests by ecosystem, upstream (the view sets `request.mirror_upstream` once it
  has routed the request), cache result (the `X-Cache` header the views set) and status; body
  bytes served (see `_count_body`).
- Access log (MIRROR_ACCESS_LOG): one line per request on the `entrepot.access` logger, with
  the path but never the query string (tokens travel there) nor any header.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator

from django.conf import settings
from django.core.signals import request_finished
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from prometheus_client import Counter

from mirror.metrics import BYTES_SERVED, REQUESTS, exposition

access_log = logging.getLogger("entrepot.access")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CACHE = {"HIT": "hit", "MISS": "miss", "STALE": "stale"}
NONE = "none"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to records made while a request is handled (JSON logs show it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (request_id := _request_id.get()) is not None:
            record.request_id = request_id
        return True


def _forget_request_id(**kwargs: object) -> None:
    # When the answer is closed (after its body was sent): the thread serves another next.
    _request_id.set(None)


request_finished.connect(_forget_request_id, dispatch_uid="entrepot-request-id")


def ecosystem(path: str) -> str:
    """Which protocol a path belongs to (the URL patterns' order, by prefix)."""
    if path.startswith("/v2/") or path == "/v2":
        return "oci"
    if path.startswith("/sumdb/"):
        return "sumdb"
    if path.startswith("/api/"):
        return "api"
    if "/@v/" in path or path.endswith("/@latest"):
        return "go"
    return "other"


_children: dict[tuple[str, str, str, str], tuple[Counter, Counter]] = {}


def _metrics_of(eco: str, upstream: str, cache: str, status: str) -> tuple[Counter, Counter]:
    """The (requests, bytes) counters of one label set, looked up once per process."""
    key = (eco, upstream, cache, status)
    if (found := _children.get(key)) is None:
        found = (REQUESTS.labels(*key), BYTES_SERVED.labels(eco, upstream, cache))
        _children[key] = found
    return found


def _counted(chunks: Iterable[bytes], add: Callable[[float], None]) -> Iterator[bytes]:
    """The body's chunks, their total added once the body ends or is closed (a client gone
    half-way counts what was handed to the server)."""
    sent = 0
    try:
        for chunk in chunks:
            sent += len(chunk)
            yield chunk
    finally:
        add(sent)


def _count_body(
    request: HttpRequest, response: HttpResponseBase, add: Callable[[float], None]
) -> None:
    """Count the body bytes of `response`. In memory: its length. A file (FileResponse): its
    Content-Length, now, since the WSGI server sends it with sendfile and never shows us the
    bytes (wrapping it would turn sendfile off). Any other stream: as it is iterated."""
    if request.method == "HEAD":
        return
    if isinstance(response, HttpResponse):
        add(len(response.content))
    elif isinstance(response, FileResponse) and response.file_to_stream is not None:
        length = response.get("Content-Length", "")
        add(int(length) if length.isdigit() else 0)
    elif isinstance(response, StreamingHttpResponse):
        response.streaming_content = _counted(response.streaming_content, add)


def observe(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    access = settings.MIRROR_ACCESS_LOG

    def middleware(request: HttpRequest) -> HttpResponseBase:
        started = time.monotonic()
        request_id = request.META.get("HTTP_X_REQUEST_ID", "")
        if not _SAFE_ID.fullmatch(request_id):
            request_id = os.urandom(8).hex()
        _request_id.set(request_id)
        response = get_response(request)
        response["X-Request-ID"] = request_id
        path = request.path_info
        eco = ecosystem(path)
        upstream = getattr(request, "mirror_upstream", None) or NONE
        cache = _CACHE.get(response.get("X-Cache", ""), NONE)
        status = response.status_code
        requests, served = _metrics_of(eco, upstream, cache, str(status))
        requests.inc()
        _count_body(request, response, served.inc)
        if access:
            access_log.info(
                "%s %s %s",
                request.method,
                path,
                status,
                extra={
                    "method": request.method,
                    "path": path,
                    "status": status,
                    "ecosystem": eco,
                    "upstream": upstream,
                    "cache": cache,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        return response

    return middleware


def metrics(request: HttpRequest) -> HttpResponse:
    """`/metrics` in the Prometheus text format; with MIRROR_METRICS_TOKEN set, only for
    `Authorization: Bearer <token>`."""
    token = settings.MIRROR_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("metrics need a bearer token\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)
