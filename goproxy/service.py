"""Go module files through the core: lists and @latest as TTL documents, .info/.mod/.zip
through the fill path with their verifiers. Every upstream answer is capped and checked
before it is cached; what fails is an UpstreamInvalid (or InvalidContent for a file)."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, transaction

from mirror import fill, stats
from mirror.documents import Document, get_document
from mirror.errors import InvalidContent, UpstreamInvalid, UpstreamNotFound, UpstreamUnavailable

from . import chain, keys, sumdb
from .models import ModuleVersion
from .paths import InvalidPath, check_version, escape
from .verify import (
    MAX_GO_MOD,
    MAX_INFO,
    MAX_ZIP,
    InfoVerifier,
    ModVerifier,
    ZipVerifier,
    check_info,
)

NOT_FOUND_TTL = 60
MAX_SIZE = {"info": MAX_INFO, "mod": MAX_GO_MOD, "zip": MAX_ZIP}
LIST = "go-list"  # document namespaces of `@v/list` and `@latest`
LATEST = "go-latest"


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


def file(module: str, version: str, ext: str, *, count: bool = True) -> fill.Content:
    """A module's .info, .mod or .zip, verified before it is cached; a zip counts as a
    download of the version unless `count` is off (a prewarm is not a client's download)."""
    route = _route(module)
    suffix = f"@v/{escape(version)}.{ext}"

    def fetch() -> fill.Source:
        response = route.open(suffix)
        length = response.headers.get("Content-Length", "")
        return fill.Source(
            size=int(length) if length.isdigit() else None,
            chunks=response.iter_raw(),
            close=response.close,
        )

    def verifier() -> fill.Verifier:
        if ext == "info":
            return InfoVerifier(module, version)
        sums = expected(route, version)
        if ext == "mod":
            return ModVerifier(sums.mod if sums else None)
        return ZipVerifier(module, version, sums.zip if sums else None)

    key = keys.file_key(route.scope, module, version, ext)
    content = fill.get(key, fetch=fetch, verifier=verifier, max_size=MAX_SIZE[ext])
    if ext == "zip" and content.cache == "MISS":
        _index(module, version, content.size)
    if ext == "zip" and count:
        stats.record(
            "goproxy.ModuleVersion",
            module=module,
            version=version,
            count_field="download_count",
            last_field="last_download",
        )
    return content


def _index(module: str, version: str, size: int | None) -> None:
    """Record a newly fetched version for the admin (and its download counts)."""
    try:
        with transaction.atomic():
            ModuleVersion.objects.get_or_create(
                module=module, version=version, defaults={"zip_size": size}
            )
    except IntegrityError:
        pass  # created concurrently
