"""HTTP responses for stored or filling content: Range, sendfile, redirects, cache headers."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import BinaryIO

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse

from .fill import CHUNK, Content

IMMUTABLE = "public, max-age=31536000, immutable"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
        length = min(int(last), size)
        if length == 0:
            raise RangeNotSatisfiable(size)
        return size - length, length
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(size)
    return start, end - start + 1


def _chunks(stream: BinaryIO, length: int | None) -> Iterator[bytes]:
    """Read a non-file stream (S3 body) in chunks, at most `length` bytes."""
    remaining = length
    try:
        while remaining is None or remaining > 0:
            data = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not data:
                return
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        stream.close()


def _peeked(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`chunks` with its first item already produced (raising now if it fails)."""
    first = next(chunks, None)
    return chunks if first is None else itertools.chain([first], chunks)


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
        body = _peeked(body)
    if hasattr(body, "fileno"):
        # A real file positioned at `start`: the WSGI server sends it with sendfile, and
        # stops at Content-Length.
        response = FileResponse(body, content_type=content_type)
    elif hasattr(body, "read"):
        response = StreamingHttpResponse(_chunks(body, length), content_type=content_type)
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
