"""Re-verification of cached Go modules: a module changed behind the mirror's back (on disk,
in the bucket) is found by hashing what storage holds now against the checksum database.

Every `.zip` and `.mod` was checked against the database before it was cached; this checks
it again later, sampled (least recently verified first, about a byte budget of zips per
run), and reports each stored file that no longer matches as a Finding for the core to
quarantine (mirror/reverify.py). `.info` and `.mod` are documents in the database
(service.SMALL_FILES), not stored files: one that no longer passes is a Finding with its
document namespace, which the core quarantines like an object (the next request fetches it
anew); those that earlier releases stored as files are checked as files. Modules that are not
checked against the database (private upstreams with `verify_sums` off, or
MIRROR_GO_VERIFY=off) have no hashes to compare: they are skipped, and the run says how many.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from mirror import documents
from mirror.ecosystems import Finding
from mirror.errors import InvalidContent, UpstreamError
from mirror.storage import ObjectNotFound, Storage, get_storage

from . import chain, keys, service
from .models import ModuleVersion
from .verify import MAX_GO_MOD, MAX_INFO, check_info, check_zip, h1, zip_h1

log = logging.getLogger(__name__)
COPY_CHUNK = 1 << 20


def run(budget_bytes: int) -> Iterator[Finding]:
    """Findings for the module versions checked in this run (see the module docstring)."""
    if settings.MIRROR_GO_VERIFY == "off":
        log.info("Go re-verification skipped: MIRROR_GO_VERIFY is off")
        return
    storage = get_storage()
    spent = checked = skipped = 0
    order = (F("verified_at").asc(nulls_first=True), "created", "pk")
    for pk in list(ModuleVersion.objects.order_by(*order).values_list("pk", flat=True)):
        if spent >= budget_bytes:
            break
        row = ModuleVersion.objects.filter(pk=pk).first()
        if row is None:  # purged meanwhile
            continue
        route = chain.route(row.module)
        if not route.verify_sums:
            skipped += 1
            continue
        try:
            findings, size = _check(storage, route, row.version)
        except UpstreamError as e:
            log.warning("Go re-verification stopped: checksum database unavailable: %s", e)
            break
        ModuleVersion.objects.filter(pk=pk).update(verified_at=timezone.now())
        spent += size
        checked += 1
        yield from findings
    log.info(
        "Go re-verification: %d module versions checked (%d bytes of zips); %d skipped "
        "(verify_sums off: private modules have no checksum-database hashes)",
        checked,
        spent,
        skipped,
    )


def _check(storage: Storage, route: chain.Route, version: str) -> tuple[list[Finding], int]:
    """Findings for the stored files of one version, and the zip bytes read."""
    module = route.module
    upstream_id = route.upstreams[0].id if route.upstreams else None

    def key(ext: str) -> str:
        return keys.file_key(route.scope, module, version, ext)

    document = keys.small_file_key(route.scope, module, version)
    try:
        sums = service.expected(route, version)
    except InvalidContent as e:  # the database does not know it (any more)
        found = [key(ext) for ext in ("mod", "zip") if storage.stat(key(ext)) is not None]
        bad = [Finding(k, str(e), upstream_id) for k in found]
        if _document("mod", document) is not None:
            bad.append(Finding(document, str(e), upstream_id, service.SMALL_FILES["mod"]))
        return bad, 0
    assert sums is not None  # verify_sums is on
    documents_bad = [
        Finding(document, why, upstream_id, service.SMALL_FILES[ext])
        for ext, why in (
            ("info", _info_problem(_document("info", document), module, version)),
            ("mod", _mod_problem(_document("mod", document), sums.mod)),
        )
        if why
    ]
    problems = {
        "info": _info_problem(_read_small(storage, key("info"), MAX_INFO), module, version),
        "mod": _mod_problem(_read_small(storage, key("mod"), MAX_GO_MOD), sums.mod),
    }
    size = storage.stat(key("zip")) or 0
    problems["zip"] = _zip_problem(storage, key("zip"), module, version, sums.zip)
    findings = [Finding(key(ext), why, upstream_id) for ext, why in problems.items() if why]
    return documents_bad + findings, size


def _document(ext: str, key: str) -> bytes | None:
    return documents.peek(service.SMALL_FILES[ext], key)


def _info_problem(data: bytes | None, module: str, version: str) -> str | None:
    if data is None:
        return None
    try:
        named = check_info(data, module)
    except InvalidContent as e:
        return f".info is no longer valid: {e}"
    return None if named == version else f".info names {named}, not {version}"


def _mod_problem(data: bytes | None, expected: str) -> str | None:
    if data is None:
        return None
    actual = h1([("go.mod", data)])
    if actual != expected:
        return f"go.mod hashes to {actual}; the checksum database says {expected}"
    return None


def _zip_problem(
    storage: Storage, key: str, module: str, version: str, expected: str
) -> str | None:
    with tempfile.NamedTemporaryFile(prefix="reverify-", suffix=".zip") as copy:
        if not _copy(storage, key, copy):
            return None
        path = Path(copy.name)
        try:
            actual = zip_h1(path, check_zip(path, module, version))
        except (InvalidContent, zipfile.BadZipFile, zlib.error, EOFError) as e:
            return f"zip is no longer a valid module zip: {e}"
    if actual != expected:
        return f"zip hashes to {actual}; the checksum database says {expected}"
    return None


def _open(storage: Storage, key: str, length: int | None = None) -> BinaryIO | None:
    """The stored object, or None when nothing is stored under `key` (never fetched, or
    quarantined or purged meanwhile)."""
    try:
        return storage.open(key, 0, length)
    except ObjectNotFound:
        return None


def _copy(storage: Storage, key: str, out: IO[bytes]) -> bool:
    """Copy the stored object to `out`; False when nothing is stored under `key`."""
    stream = _open(storage, key)
    if stream is None:
        return False
    with contextlib.closing(stream):
        while block := stream.read(COPY_CHUNK):
            out.write(block)
    out.flush()
    return True


def _read_small(storage: Storage, key: str, limit: int) -> bytes | None:
    """A small stored file: at most `limit` bytes, and one more (which fails its check)."""
    stream = _open(storage, key, limit + 1)
    if stream is None:
        return None
    with contextlib.closing(stream):
        return stream.read(limit + 1)
