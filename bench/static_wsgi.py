"""A WSGI application that only serves the files of a folder: the floor of the Go measure.

`make bench` (bench/gomod.py) runs it under the mirror's own gunicorn (config/gunicorn.py: the
same worker class, processes, threads and keep-alive) on the static GOPROXY tree that nginx
serves, so `go mod download` from it shows what the server alone costs against nginx, with
nothing of Django or the mirror on the path. Files are answered as the mirror answers its
warm hits: up to SMALL bytes from memory (it keeps `.info`, `.mod` and zips up to 256 KiB in
memory), larger ones through `wsgi.file_wrapper` (sendfile). Small files are read at start,
each worker for itself, and answered from a dict by their path, as warm as the mirror's warm
hits: looking each up on the disk (realpath, isfile, open, fstat, read) took ~30 % of this
application's samples under `wrk` (py-spy), which is no server's cost.

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
_OCTETS = ("Content-Type", "application/octet-stream")


def _small_files(root: str) -> dict[str, bytes]:
    """The files under `root` of at most SMALL bytes, by their URL path."""
    found = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            file = os.path.join(folder, name)
            if os.path.getsize(file) <= SMALL:
                with open(file, "rb") as f:
                    found["/" + os.path.relpath(file, root)] = f.read()
    return found


_small = _small_files(ROOT)


def _answer(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
    start_response(status, [*_TEXT, ("Content-Length", str(len(body)))])
    return [body]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
        return _answer(start_response, "405 Method Not Allowed", b"GET or HEAD\n")
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":  # what tests.mirror_server.MirrorServer waits for
        return _answer(start_response, "200 OK", b"ok\n")
    if (body := _small.get(path)) is not None:
        return _file(start_response, body)
    file = os.path.realpath(os.path.join(ROOT, path.lstrip("/")))
    if not file.startswith(ROOT + os.sep) or not os.path.isfile(file):
        return _answer(start_response, "404 Not Found", b"not found\n")
    f = open(file, "rb")  # noqa: SIM115 - the file wrapper closes it
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [_OCTETS, ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](f, 1024 * 1024)


def _file(start_response: Callable[..., Any], body: bytes) -> list[bytes]:
    start_response("200 OK", [_OCTETS, ("Content-Length", str(len(body)))])
    return [body]
