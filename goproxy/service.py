"""Go module files through the core: lists and @latest as TTL documents, .info/.mod/.zip
through the fill path with their verifiers."""

from __future__ import annotations

import json

from django.db import IntegrityError, transaction

from mirror import fill, stats
from mirror.documents import Document, get_document
from mirror.errors import InvalidContent, UpstreamError

from . import chain, sumdb
from .models import ModuleVersion
from .paths import InvalidPath, check_version, escape
from .verify import InfoVerifier, ModVerifier, ZipVerifier

NOT_FOUND_TTL = 60


def version_list(module: str) -> Document:
    def fetch() -> bytes:
        lines = chain.send(module, "@v/list").text.split("\n")
        valid = []
        for line in lines:
            version = line.strip()
            try:
                valid.append(check_version(module, version))
            except InvalidPath:
                continue
        return "".join(f"{v}\n" for v in valid).encode()

    ttl, stale = chain.ttl(module)
    return get_document(
        "go-list", module, fetch, ttl=ttl, stale_max_age=stale, not_found_ttl=NOT_FOUND_TTL
    )


def latest(module: str) -> Document:
    def fetch() -> bytes:
        body = chain.send(module, "@latest").content
        try:
            check_version(module, json.loads(body)["Version"])
        except (ValueError, KeyError, TypeError, InvalidPath) as e:
            raise UpstreamError(f"bad @latest answer for {module}: {e}") from None
        return body

    ttl, stale = chain.ttl(module)
    return get_document(
        "go-latest", module, fetch, ttl=ttl, stale_max_age=stale, not_found_ttl=NOT_FOUND_TTL
    )


def _expected(module: str, version: str) -> sumdb.Sums | None:
    """The checksum database's hashes, or None for modules that are not checked."""
    db = sumdb.default_database()
    if db is None or not chain.verifies_sums(module):
        return None
    try:
        return sumdb.lookup(db, module, version)
    except sumdb.NotInSumdb:
        raise InvalidContent(f"{module}@{version} is not in the checksum database") from None
    except sumdb.SumdbError as e:
        raise InvalidContent(f"checksum database answer rejected: {e}") from None


def file(module: str, version: str, ext: str) -> fill.Content:
    """A module's .info, .mod or .zip, verified before it is cached."""
    key = f"go/{escape(module)}/@v/{escape(version)}.{ext}"

    def fetch() -> fill.Source:
        response = chain.send(module, f"@v/{escape(version)}.{ext}", stream=True)
        length = response.headers.get("Content-Length", "")
        return fill.Source(
            size=int(length) if length.isdigit() else None,
            chunks=response.iter_raw(),
            close=response.close,
        )

    def verifier() -> fill.Verifier:
        if ext == "info":
            return InfoVerifier(version)
        sums = _expected(module, version)
        if ext == "mod":
            return ModVerifier(sums.mod if sums else None)
        return ZipVerifier(module, version, sums.zip if sums else None)

    content = fill.get(key, fetch=fetch, verifier=verifier)
    if ext == "zip":
        if content.cache == "MISS":
            _index(module, version, content.size)
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
