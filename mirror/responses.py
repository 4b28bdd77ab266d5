"""HTTP responses for stored or filling content: Range, sendfile, redirects, cache headers."""

from __future__ import annotations

import re
from collections.abc import Iterator

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse

from .content import Content, read_chunks

IMMUTABLE = "public, max-age=31536000, immutable"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Positions past any object's size: a number longer than this many digits is "beyond the
# end" (Python refuses to parse integers of more than 4300 digits).
_HUGE = 1 << 63
_MAX_DIGITS = 19


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable (size {size})")
        self.size = size


def parse_range(header: str, size: int | None) -> tuple[int, int] | None:
    """(start, length) of a single `bytes=` range, or None to answer the whole object.

    Multiple ranges and unknown sizes get the whole object (RFC 9110 allows ignoring Range).
    """
    match = _RANGE.match(header.strip()) if header else None
    if match is None or size is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = min(_position(last), size)
        if length == 0:
            raise RangeNotSatisfiable(size)
        return size - length, length
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(size)
    return start, end - start + 1


def _position(digits: str) -> int:
    """A byte position from the header; absurdly long numbers are past any end."""
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


class _Peeked:
    """Chunks with the first one already produced (raising now if the source fails early: a
    fill in progress, a storage stream). Closing it closes the source (a reader's spool
    descriptor and count, a storage stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._first = next(chunks, None)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if (first := self._first) is not None:
            self._first = None
            return first
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def content_response(
    request: HttpRequest, content: Content, content_type: str, *, immutable: bool = True
) -> HttpResponse:
    """A GET answer for `content`: 200 or 206, sendfile where the backend allows it.

    Raises RangeNotSatisfiable for a range outside the object.
    """
    if content.cache == "HIT" and (url := content.redirect_url()):
        response: HttpResponse = HttpResponse(status=307)
        response["Location"] = url
        response["X-Cache"] = "HIT"
        return response
    size = content.size
    wanted = parse_range(request.headers.get("Range", ""), size)
    start, length = wanted if wanted else (0, size)
    body = content.open(start, length)
    if not hasattr(body, "read"):
        # A fill in progress: wait for its first bytes before answering, so that a fill that
        # fails early (bad digest, refused content) is a proper error answer, not a broken 200.
        body = _Peeked(body)
    if hasattr(body, "fileno"):
        # A real file positioned at `start`: the WSGI server sends it with sendfile, and
        # stops at Content-Length.
        response = FileResponse(body, content_type=content_type)
    elif hasattr(body, "read"):
        # A stream from object storage: its first read here, so that storage failing at once
        # is an error answer (503), not a 500 from the server once the headers are due.
        chunks = _Peeked(read_chunks(body, length))
        response = StreamingHttpResponse(chunks, content_type=content_type)
    else:
        response = StreamingHttpResponse(body, content_type=content_type)
    if length is not None:
        response["Content-Length"] = str(length)
    if wanted:
        response.status_code = 206
        response["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    response["Accept-Ranges"] = "bytes"
    response["X-Cache"] = content.cache
    if immutable:
        response["Cache-Control"] = IMMUTABLE
    return response
