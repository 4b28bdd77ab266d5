"""A WSGI application that only serves the files of a folder: the floor of the Go measure.

`make bench` (bench/gomod.py) runs it under the mirror's own gunicorn (config/gunicorn.py: the
same worker class, processes, threads and keep-alive) on the static GOPROXY tree that nginx
serves, so `go mod download` from it shows what the server alone costs against nginx, with
nothing of Django or the mirror on the path. Files are answered as the mirror answers its
warm hits: up to SMALL bytes from memory (goproxy/views.py does so for zips up to 256 KiB;
`.info` and `.mod` it keeps in memory), larger ones through `wsgi.file_wrapper` (sendfile).

    BENCH_STATIC_ROOT=/path/to/tree gunicorn --config config/gunicorn.py bench.static_wsgi
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import django

# Loaded as in the mirror's workers (config/gunicorn.py's post_worker_init reads the URLconf
# and freezes what is loaded), only never called on a request.
django.setup()

ROOT = os.path.realpath(os.environ.get("BENCH_STATIC_ROOT", "."))
SMALL = 256 << 10
_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


def _answer(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
    start_response(status, [*_TEXT, ("Content-Length", str(len(body)))])
    return [body]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
        return _answer(start_response, "405 Method Not Allowed", b"GET or HEAD\n")
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":  # what tests.mirror_server.MirrorServer waits for
        return _answer(start_response, "200 OK", b"ok\n")
    file = os.path.realpath(os.path.join(ROOT, path.lstrip("/")))
    if not file.startswith(ROOT + os.sep) or not os.path.isfile(file):
        return _answer(start_response, "404 Not Found", b"not found\n")
    f = open(file, "rb")  # noqa: SIM115 - the file wrapper closes it
    size = os.fstat(f.fileno()).st_size
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    if size <= SMALL:
        with f:
            return [f.read()]
    return environ["wsgi.file_wrapper"](f, 1024 * 1024)
