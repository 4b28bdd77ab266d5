"""Go module files through the core: lists and @latest as TTL documents, a version's .info and
.mod as immutable documents, its .zip through the fill path with its verifier. Every upstream
answer is capped and checked before it is cached; what fails is an UpstreamInvalid (or
InvalidContent / DigestMismatch for a file).

`.info` and `.mod` are a few hundred bytes: the streaming fill (a thread, a spool file, a
lease, an fsync'd commit and an index row each) cost most of a cold `go mod download`. As
documents they take at most one query when warm, and when cold one fetch under the fetch-once key,
checked in memory, kept with one write (mirror/documents.get_immutable). Files cached under
their storage key before that change are still served: a miss reads that key first."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from django.conf import settings

from mirror import fill, rows, stats
from mirror.documents import Document, get_document, get_immutable
from mirror.errors import (
    DigestMismatch,
    InvalidContent,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from mirror.http import stream_source
from mirror.storage import ObjectNotFound, get_storage

from . import chain, keys, sumdb
from .models import ModuleVersion
from .paths import InvalidPath, check_version, escape
from .verify import (
    MAX_GO_MOD,
    MAX_INFO,
    MAX_ZIP,
    ZipVerifier,
    check_info,
    check_mod,
    check_version_info,
)

log = logging.getLogger(__name__)

NOT_FOUND_TTL = 60
MAX_SIZE = {"info": MAX_INFO, "mod": MAX_GO_MOD, "zip": MAX_ZIP}
LIST = "go-list"  # document namespaces of `@v/list` and `@latest`
LATEST = "go-latest"
SMALL_FILES = {"info": "go-info", "mod": "go-mod"}  # document namespaces of .info and .mod
SMALL_ZIP = 256 << 10  # committed zips up to this size are answered from memory


def _route(module: str) -> chain.Route:
    """The module's route; UpstreamNotFound when no enabled upstream may serve it (its private
    owners are all disabled, or none is configured): nothing cached is served then either."""
    route = chain.route(module)
    if not route.upstreams:
        raise UpstreamNotFound(f"no enabled upstream serves {module}")
    return route


def document_key(route: chain.Route) -> str:
    """The key of the module's `@v/list` and `@latest` documents."""
    return keys.document_key(route.scope + route.module)


def _document(
    kind: str,
    suffix: str,
    route: chain.Route,
    parse: Callable[[bytes], bytes],
    refresh: bool,
) -> Document:
    """The upstreams' answer at `suffix`, as `parse` accepts it, cached per route;
    `refresh` asks the upstreams now, even within the TTL."""
    ttl, stale = route.ttl()
    return get_document(
        kind,
        document_key(route),
        lambda: parse(route.fetch(suffix).content),
        ttl=ttl,
        stale_max_age=stale,
        not_found_ttl=NOT_FOUND_TTL,
        force=refresh,
    )


def version_list(module: str, *, refresh: bool = False) -> Document:
    """`@v/list`: the valid release versions the upstream lists, one a line. A line's first
    field is the version, as the go command reads it; other lines are left out."""

    def parse(body: bytes) -> bytes:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise UpstreamInvalid(f"@v/list of {module} is not UTF-8") from None
        valid = []
        for line in text.split("\n"):
            fields = line.split()
            try:
                valid.append(check_version(module, fields[0]) if fields else "")
            except InvalidPath:
                continue
        return "".join(f"{v}\n" for v in valid if v).encode()

    return _document(LIST, "@v/list", _route(module), parse, refresh)


def latest(module: str, *, refresh: bool = False) -> Document:
    """`@latest`: a JSON object naming a valid version of the module."""

    def parse(body: bytes) -> bytes:
        try:
            check_info(body, module)
        except InvalidContent as e:
            raise UpstreamInvalid(f"bad @latest answer for {module}: {e}") from None
        return body

    return _document(LATEST, "@latest", _route(module), parse, refresh)


def expected(route: chain.Route, version: str) -> sumdb.Sums | None:
    """The checksum database's hashes, or None for modules that are not checked."""
    if not route.verify_sums or settings.MIRROR_GO_VERIFY == "off":
        return None
    db = sumdb.default_database()
    if db is None:
        raise UpstreamUnavailable("no checksum database is configured (MIRROR_GO_VERIFY is on)")
    try:
        return sumdb.lookup(db, route.module, version)
    except sumdb.NotInSumdb:
        raise InvalidContent(f"{route.module}@{version} is not in the checksum database") from None


def small_file(module: str, version: str, ext: str) -> Document:
    """A version's `.info` or `.mod`, verified before it is kept (for good)."""
    route = _route(module)

    def fetch() -> bytes:
        if (kept := _legacy(route, version, ext)) is not None:
            return kept
        answer = route.fetch(f"@v/{escape(version)}.{ext}", cap=MAX_SIZE[ext])
        return _verified(route, version, ext, answer.content)

    # Scoped like the files: a private module never shares one with a public one.
    key = keys.small_file_key(route.scope, module, version)
    return get_immutable(SMALL_FILES[ext], key, fetch)


def _verified(route: chain.Route, version: str, ext: str, body: bytes) -> bytes:
    """`body` if it is a valid `.info` or `.mod` of the version (against the checksum
    database when the module is checked); InvalidContent or DigestMismatch otherwise."""
    if ext == "info":
        check_version_info(body, route.module, version)
    else:
        sums = expected(route, version)
        check_mod(body, sums.mod if sums else None)
    return body


def _legacy(route: chain.Route, version: str, ext: str) -> bytes | None:
    """The file as an earlier release committed it to storage, checked again; None when
    there is none (or it no longer passes its checks: the upstream is asked instead)."""
    key = keys.file_key(route.scope, route.module, version, ext)
    try:
        stream = get_storage().open(key, 0, MAX_SIZE[ext] + 1)
    except ObjectNotFound:
        return None
    with contextlib.closing(stream):
        body = stream.read(MAX_SIZE[ext] + 1)
    try:
        return _verified(route, version, ext, body)
    except (InvalidContent, DigestMismatch) as e:
        log.warning("stored %s no longer passes its checks (%s): fetching it anew", key, e)
        return None


def zip_file(module: str, version: str, *, count: bool = True) -> fill.Content:
    """A version's .zip, verified before it is cached; it counts as a download of the
    version unless `count` is off (a prewarm is not a client's download). A committed zip
    of at most SMALL_ZIP bytes comes whole, in memory (most modules' zips are ~20 KB)."""
    route = _route(module)
    suffix = f"@v/{escape(version)}.zip"

    def fetch() -> fill.Source:
        return stream_source(route.open(suffix))

    def verifier() -> fill.Verifier:
        sums = expected(route, version)
        return ZipVerifier(module, version, sums.zip if sums else None)

    key = keys.file_key(route.scope, module, version, "zip")
    # Counted against the route's first upstream (its cache budget, mirror/eviction.py).
    upstream_id = route.upstreams[0].id
    content = fill.get(
        key,
        fetch=fetch,
        verifier=verifier,
        upstream_id=upstream_id,
        max_size=MAX_ZIP,
        in_memory=SMALL_ZIP,
    )
    if content.cache == "MISS":
        _index(module, version, content.size)
    if count:
        stats.record(
            "goproxy.ModuleVersion",
            module=module,
            version=version,
            count_field="download_count",
            last_field="last_download",
        )
    return content


def _index(module: str, version: str, size: int | None) -> None:
    """Record a newly fetched version for the admin (and its download counts): one
    INSERT, which leaves a row already there (another process's) as it is."""
    rows.insert(
        ModuleVersion,
        {"module": module, "version": version, "zip_size": size},
        conflict=("module", "version"),
    )
